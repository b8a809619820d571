// ATen's intra-op threads (the worker's OpenMP team) as a TaskRunner (common/run_in_parallel.h),
// for the wire work a worker does between its parallel kernels: decoding payloads and
// aggregates, and the in-process hub's aggregation. The team's threads spin on their cores for
// a while after each parallel region, so a RunInParallel helper woken on one of those cores
// waits for them, and its caller ends up doing the work alone.
//
// Thread-safe. Called from inside a parallel region, tasks run one after another.
#ifndef DEMOD_WORKER_OPTIMIZER_ATEN_THREADS_H_
#define DEMOD_WORKER_OPTIMIZER_ATEN_THREADS_H_

#include "common/run_in_parallel.h"

namespace demod {

const TaskRunner& AtenThreads();

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_ATEN_THREADS_H_
