// Spreading a few independent tasks over threads, for work on the coordinator's critical path
// (a step's aggregation, its fan-out). Tasks must not depend on one another.
//
// RunInParallel(n, task) runs task(0) .. task(n - 1): task(0) on the calling thread, the others
// on helper threads, and returns once all are done. Helpers are kept for reuse (a process-wide
// pool of at most 16, started as calls need them): waking one costs a fraction of starting a
// thread. A task that no helper takes in time, because all are busy or none can be started
// (the process is out of threads), is run by the calling thread after task(0): the work is
// done either way, and nothing throws. Calls may overlap, from any threads, and nest.
//
// A TaskRunner is where a job that splits into such tasks runs them: HelperThreads() is
// RunInParallel. A process whose cores already belong to a pool of its own passes that pool
// instead: a worker's OpenMP team spins on its cores between parallel regions, and a helper
// thread woken there waits for the spinning to end.
#ifndef DEMOD_COMMON_RUN_IN_PARALLEL_H_
#define DEMOD_COMMON_RUN_IN_PARALLEL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"

namespace demod {

void RunInParallel(size_t n, absl::FunctionRef<void(size_t)> task);

class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  // How many threads it spreads tasks over (>= 1): what a job should split itself into.
  virtual size_t threads() const = 0;
  // Runs task(0) .. task(n - 1), on any of its threads, and returns once all are done.
  virtual void Run(size_t n, absl::FunctionRef<void(size_t)> task) const = 0;
};

// RunInParallel, over the machine's cores.
const TaskRunner& HelperThreads();
// Every task on the calling thread, in order: for callers already running many such jobs at
// once on threads of their own.
const TaskRunner& CallingThread();

// How many threads a job of `work` units should use: one per `work_per_thread` units (at least
// one), at most `max_threads` and at most the machine's cores (or `runner`'s threads).
size_t ThreadsFor(size_t work, size_t work_per_thread, size_t max_threads);
size_t ThreadsFor(size_t work, size_t work_per_thread, size_t max_threads,
                  const TaskRunner& runner);

// Items [0, n) cut into `parts` (>= 1) contiguous shares of about equal total weight(i): share i
// is [bounds[i], bounds[i + 1]) of the parts + 1 bounds returned.
std::vector<size_t> ContiguousShares(size_t n, size_t parts,
                                     absl::FunctionRef<uint64_t(size_t)> weight);

}  // namespace demod

#endif  // DEMOD_COMMON_RUN_IN_PARALLEL_H_
