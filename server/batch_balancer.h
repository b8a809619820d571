// Shares of a fixed global batch among a run's active workers, in proportion to each one's
// measured compute throughput, so that all are expected to finish their compute at the same
// moment: a mixed fleet then trains at the speed of its sum rather than of its slowest member.
//
// Pure logic, no clock and no I/O (tests/server/batch_balancer_test.cc):
// - Observe() takes a worker's measured throughput (samples per second of forward and
//   backward) and smooths it (exponential moving average), so one noisy step moves little.
// - Shares() splits `global_batch` among the given workers: share_i proportional to the
//   smoothed throughput, within the worker's [min, max] (max: what fits its memory), by
//   water-filling; then whole samples by largest remainder (ties to the lower id). A worker
//   with no measurement yet counts as the median of those measured (all equal when none is).
// - Stability: the shares in force stay unless the new split shortens the step's expected
//   compute time (the slowest worker's share over its throughput) by more than `hysteresis`,
//   or the workers or their limits changed. Timings that wobble by 10% do not make the shares
//   oscillate; a worker that halves its speed gets a smaller share within two observations.
// - The shares sum to global_batch unless the limits forbid it: below it when the maxima sum
//   to less, above it when the minima sum to more (every worker then gets its limit).
//
// Thread-compatible.
#ifndef DEMOD_SERVER_BATCH_BALANCER_H_
#define DEMOD_SERVER_BATCH_BALANCER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "server/step_machine.h"

namespace demod {

struct BalancerOptions {
  int64_t global_batch = 0;  // samples per step, over all active workers
  double smoothing = 0.3;    // weight of a new measurement in the moving average, in (0, 1]
  double hysteresis = 0.1;   // relative gain in the step's compute time below which shares stay
};

class BatchBalancer {
 public:
  // INVALID_ARGUMENT unless global_batch >= 1, smoothing in (0, 1] and hysteresis >= 0.
  static absl::Status Validate(const BalancerOptions& options);
  explicit BatchBalancer(const BalancerOptions& options);

  // The worker's samples per step may not go below `min_samples` (>= 1) or above
  // `max_samples` (>= min_samples); without a call, [1, global_batch].
  void SetLimits(WorkerId worker, int64_t min_samples, int64_t max_samples);
  // A measurement of the worker's compute throughput; non-finite or non-positive ones are
  // ignored (a step that measured nothing).
  void Observe(WorkerId worker, double samples_per_second);
  // Forgets the worker (it left): its measurements and limits.
  void Remove(WorkerId worker);

  // Samples per step for each of `workers` (the active ones, any order), by worker id.
  std::map<WorkerId, int64_t> Shares(const std::vector<WorkerId>& workers);

  // The smoothed throughput of the worker, if measured.
  std::optional<double> throughput(WorkerId worker) const;

 private:
  struct Worker {
    std::optional<double> throughput;  // smoothed samples per second
    int64_t min_samples = 1;
    int64_t max_samples = 0;  // 0: global_batch
  };
  // Real-valued shares proportional to `weights` within the limits, summing to global_batch
  // where the limits allow.
  std::vector<double> WaterFill(const std::vector<double>& weights, const std::vector<int64_t>& lo,
                                const std::vector<int64_t>& hi) const;

  BalancerOptions options_;
  std::map<WorkerId, Worker> workers_;
  std::map<WorkerId, int64_t> in_force_;  // the shares last handed out
};

}  // namespace demod

#endif  // DEMOD_SERVER_BATCH_BALANCER_H_
