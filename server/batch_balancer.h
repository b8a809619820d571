// Shares of a fixed global batch among a run's active workers, in proportion to each one's
// measured compute throughput, so that all are expected to finish their compute at the same
// moment: a mixed fleet then trains at the speed of its sum rather than of its slowest member.
//
// Pure logic, no clock and no I/O (tests/server/batch_balancer_test.cc):
// - Observe() takes how long a worker's compute of a number of samples took (forward and
//   backward). A step costs a worker a fixed time (the calls, the synchronisation of a GPU)
//   plus a time per sample, so its samples per second grow with its share: each worker's cost
//   is modelled as overhead + samples x per_sample, fitted (least squares) through its smoothed
//   times at the last few share sizes it computed (an exponential moving average per size, so
//   one noisy step moves little). With one size measured, or a fit that is not a cost (a
//   negative overhead or slope), the overhead is taken as 0. A time far (30%) from the fitted
//   model's prediction means the worker changed speed: its earlier times are dropped.
// - Shares() splits `global_batch` among the given workers so that their modelled compute
//   times are equal, within each worker's [min, max] (max: what fits its memory), by
//   water-filling; then whole samples by largest remainder (ties to the lower id). A worker
//   with no measurement yet costs the median per sample of those measured, with no overhead
//   (all equal when none is).
// - Stability: the shares in force stay unless the new split shortens the step's modelled
//   compute time (the slowest worker's) by more than `hysteresis`, or the workers or their
//   limits changed. Timings that wobble by 10% do not make the shares oscillate; a worker that
//   halves its speed gets a smaller share within two observations.
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
  // The worker computed `samples` (>= 1) in `seconds` (> 0, finite); other measurements are
  // ignored (a step that measured nothing).
  void Observe(WorkerId worker, int64_t samples, double seconds);
  // Forgets the worker (it left): its measurements and limits.
  void Remove(WorkerId worker);

  // Samples per step for each of `workers` (the active ones, any order), by worker id.
  std::map<WorkerId, int64_t> Shares(const std::vector<WorkerId>& workers);

  // A worker's compute time for s samples: overhead + s x per_sample (seconds).
  struct Cost {
    double overhead = 0;
    double per_sample = 1;
    double Seconds(double samples) const { return overhead + samples * per_sample; }
  };
  // The worker's fitted cost, if measured.
  std::optional<Cost> cost(WorkerId worker) const;
  // Its smoothed samples per second at the share size it computed last, if measured.
  std::optional<double> throughput(WorkerId worker) const;

 private:
  static constexpr size_t kSizesKept = 3;
  struct Timing {
    double seconds = 0;  // smoothed
    uint64_t seen = 0;   // when last observed, in observations of the worker
  };
  struct Worker {
    std::map<int64_t, Timing> by_samples;  // the kSizesKept sizes observed last
    uint64_t observations = 0;
    int64_t last_samples = 0;
    int64_t min_samples = 1;
    int64_t max_samples = 0;  // 0: global_batch
  };
  static std::optional<Cost> Fit(const Worker& worker);
  // Real-valued shares that give every worker the same compute time within the limits, summing
  // to global_batch where the limits allow.
  std::vector<double> WaterFill(const std::vector<Cost>& costs, const std::vector<int64_t>& lo,
                                const std::vector<int64_t>& hi) const;

  BalancerOptions options_;
  std::map<WorkerId, Worker> workers_;
  std::map<WorkerId, int64_t> in_force_;  // the shares last handed out
};

}  // namespace demod

#endif  // DEMOD_SERVER_BATCH_BALANCER_H_
