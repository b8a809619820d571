#include "worker/optimizer/aten_threads.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace demod {
namespace {

class AtenThreadRunner : public TaskRunner {
 public:
  size_t threads() const override {
    return static_cast<size_t>(std::max(1, at::get_num_threads()));
  }
  void Run(size_t n, absl::FunctionRef<void(size_t)> task) const override {
    // Grain 1: each of the few tasks may go to its own thread.
    at::parallel_for(0, static_cast<int64_t>(n), 1, [&task](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) task(static_cast<size_t>(i));
    });
  }
};

}  // namespace

const TaskRunner& AtenThreads() {
  static const AtenThreadRunner* const runner = new AtenThreadRunner();
  return *runner;
}

}  // namespace demod
