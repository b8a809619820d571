#include "common/run_in_parallel.h"

#include <algorithm>
#include <system_error>
#include <thread>
#include <vector>

namespace demod {

void RunInParallel(size_t n, absl::FunctionRef<void(size_t)> task) {
  std::vector<std::thread> helpers;
  std::vector<size_t> not_started;
  for (size_t i = 1; i < n; ++i) {
    try {
      helpers.emplace_back([task, i] { task(i); });
    } catch (const std::system_error&) {
      not_started.push_back(i);
    }
  }
  if (n > 0) task(0);
  for (size_t i : not_started) task(i);
  for (std::thread& helper : helpers) helper.join();
}

size_t ThreadsFor(size_t work, size_t work_per_thread, size_t max_threads) {
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max<size_t>(
      1, std::min({max_threads, cores, work / std::max<size_t>(work_per_thread, 1)}));
}

}  // namespace demod
