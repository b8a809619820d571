// The coordinator's Prometheus metrics: one object owns a prometheus::Registry and turns the
// coordinator's events (membership changes, closed steps, bytes on the wire, workers' reports)
// into the demod_* series. Serve registry() with StartMetricsEndpoint (metrics_endpoint.h).
//
// What a caller may rely on:
// - Thread-safe: every method may be called from any thread (gRPC handlers, the step loop).
//   prometheus-cpp's metrics are atomic or locked; the per-worker bookkeeping here is guarded
//   by one mutex, held only for map lookups and gauge updates.
// - Label cardinality is bounded by construction: reasons are enums, and `worker` is the
//   worker's name (stable across reconnects, chosen by the operator), never its per-join id,
//   so a flapping worker does not mint a new series on every rejoin.
// - Per-worker gauges (training loss, validation loss, tokens/s, demod_worker_info) disappear
//   when the worker leaves, is evicted or is removed, so dashboards and
//   demod_training_loss_mean show only present workers. Per-worker counters stay: they are
//   cumulative and rate() needs them.
// - demod_worker_info{worker, device_kind, device_name} carries the hardware a worker joined
//   with: one series per present worker (so at most max_workers), device_kind from an enum and
//   device_name as the join validated it (printable ASCII, at most 128 bytes).
// - Every labelled counter a worker can have exists (at 0) from its join, and every reason
//   exists from construction, so rate() and increase() see the first event.
#ifndef DEMOD_SERVER_COORDINATOR_METRICS_H_
#define DEMOD_SERVER_COORDINATOR_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace demod {

// Why a worker left of its own accord or through its connection (demod_leaves_total{reason}).
// kFinished: its stream ended after the run's last step, the normal end of every worker.
// kSlowConsumer: it left more unread than RunConfig::outbound_queue_steps allows.
enum class LeaveReason { kDisconnected, kInvalidMessage, kShutdown, kFinished, kSlowConsumer };
// Why the coordinator removed a worker (demod_evictions_total{reason}).
// kNoDonor: a joiner whose possible donors all left, with parameters too old to seed the run.
enum class EvictionReason { kMissedSteps, kHeartbeat, kNoDonor };

// The label value each reason is exported with ("disconnected", "missed_steps", ...).
const char* LeaveReasonLabel(LeaveReason reason);
const char* EvictionReasonLabel(EvictionReason reason);

class CoordinatorMetrics {
 public:
  // Exports demod_run_info{run_id} 1, so every series can be joined to the run it belongs to.
  explicit CoordinatorMetrics(const std::string& run_id);
  ~CoordinatorMetrics();

  CoordinatorMetrics(const CoordinatorMetrics&) = delete;
  CoordinatorMetrics& operator=(const CoordinatorMetrics&) = delete;

  // Shared so an endpoint can keep it alive for as long as it serves it.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // The run's shape, exported so dashboards can show an ETA and alerts the worker floor.
  void SetRunLimits(int64_t total_steps, int min_workers);

  // Run state.
  void SetActiveWorkers(int n);
  // The last completed step, and the learning rate its update used.
  void SetCurrentStep(int64_t step);
  void SetLearningRate(double lr);
  void SetPaused(bool paused);

  // Membership. Leaving and eviction also remove the worker's gauges (RemoveWorker).
  // `device_kind` is a label value such as "cpu" or "cuda"; `device_name` the hardware's name.
  void WorkerJoined(const std::string& worker, const std::string& device_kind,
                    const std::string& device_name);
  void WorkerLeft(const std::string& worker, LeaveReason reason);
  void WorkerEvicted(const std::string& worker, EvictionReason reason);
  // Drops the worker's gauges; its counters stay.
  void RemoveWorker(const std::string& worker);

  // A step closed. `dense_equivalent_bytes`: what an fp32 all-reduce of the gradients would
  // have moved for this step, so dashboards can show the saving DeMo buys. A step with fewer
  // contributors than expected extends demod_consecutive_short_steps; a full one resets it.
  void StepClosed(double duration_s, double barrier_wait_s, int contributors, int expected,
                  uint64_t dense_equivalent_bytes);

  // Wire traffic with one worker, in bytes.
  void BytesReceived(const std::string& worker, uint64_t n);
  void BytesSent(const std::string& worker, uint64_t n);

  // The step messages themselves, encoded, without framing: a payload decoded from a worker,
  // an aggregate sent to one. What workers log as a step's bytes up and down (their CSVs).
  void PayloadReceived(const std::string& worker, uint64_t bytes);
  void AggregateSent(const std::string& worker, uint64_t bytes);

  // A payload arrived after its step closed / a step closed without the worker's payload.
  void ContributionLate(const std::string& worker);
  void ContributionMissed(const std::string& worker);

  // A worker's training report. `validation_loss` is NaN when the worker did not measure it
  // this time; the last measured value stays exported. Tokens per second is exported only
  // when compute_seconds > 0.
  void Report(const std::string& worker, double loss, double validation_loss, uint64_t tokens,
              double compute_seconds);

  // A worker's compute throughput over its latest report, in samples per second (reports that
  // say their samples), and, with batch balancing, the samples per step it was told to compute.
  void Throughput(const std::string& worker, double samples_per_second);
  void BatchShare(const std::string& worker, int64_t samples);

  // A worker's parameter fingerprint disagreed with the run's.
  void FingerprintMismatch(const std::string& worker);
  // A donor streamed the run's parameters to a joiner.
  void StateTransfer(uint64_t bytes);
  // With no member holding the run's parameters, a seed behind the run's completed steps was
  // taken (after the stale seed grace): `steps` steps of training are undone.
  void SeedRolledBack(int64_t steps);
  // The run's state could not be written to the state directory (called from the saver's
  // thread; thread-safe like everything here).
  void StateSaveFailed();

 private:
  struct WorkerSeries {
    prometheus::Counter* received_bytes;
    prometheus::Counter* sent_bytes;
    prometheus::Counter* late;
    prometheus::Counter* missed;
    prometheus::Counter* tokens;
    prometheus::Counter* fingerprint_mismatches;
    prometheus::Counter* evictions;
    prometheus::Counter* payload_bytes;
    prometheus::Counter* aggregate_bytes;
    // Gauges exist only while the worker is present and has reported them.
    prometheus::Gauge* info = nullptr;
    prometheus::Gauge* loss = nullptr;
    prometheus::Gauge* validation_loss = nullptr;
    prometheus::Gauge* tokens_per_second = nullptr;
    prometheus::Gauge* samples_per_second = nullptr;
    prometheus::Gauge* batch_share = nullptr;
  };

  WorkerSeries& SeriesLocked(const std::string& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveGaugesLocked(const std::string& worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateLossMeanLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::shared_ptr<prometheus::Registry> registry_;

  // Families and unlabelled series: created in the constructor, owned by registry_.
  prometheus::Gauge* active_workers_;
  prometheus::Gauge* current_step_;
  prometheus::Gauge* total_steps_;
  prometheus::Gauge* min_workers_;
  prometheus::Gauge* learning_rate_;
  prometheus::Gauge* consecutive_short_steps_;
  prometheus::Gauge* paused_;
  prometheus::Counter* state_save_failures_;
  prometheus::Counter* seed_rollbacks_;
  prometheus::Counter* seed_rollback_steps_;
  prometheus::Counter* joins_;
  prometheus::Family<prometheus::Counter>* leaves_;
  prometheus::Family<prometheus::Counter>* evictions_;
  prometheus::Histogram* step_duration_;
  prometheus::Histogram* barrier_wait_;
  prometheus::Counter* steps_;
  prometheus::Gauge* step_contributors_;
  prometheus::Gauge* step_expected_contributors_;
  prometheus::Counter* dense_equivalent_bytes_;
  prometheus::Counter* received_bytes_;
  prometheus::Counter* sent_bytes_;
  prometheus::Family<prometheus::Counter>* worker_received_bytes_;
  prometheus::Family<prometheus::Counter>* worker_sent_bytes_;
  prometheus::Family<prometheus::Counter>* late_contributions_;
  prometheus::Family<prometheus::Counter>* missed_contributions_;
  prometheus::Family<prometheus::Counter>* tokens_;
  prometheus::Family<prometheus::Counter>* fingerprint_mismatches_;
  prometheus::Family<prometheus::Counter>* worker_evictions_;
  prometheus::Family<prometheus::Counter>* worker_payload_bytes_;
  prometheus::Family<prometheus::Counter>* worker_aggregate_bytes_;
  prometheus::Family<prometheus::Gauge>* worker_info_;
  prometheus::Family<prometheus::Gauge>* training_loss_;
  prometheus::Family<prometheus::Gauge>* training_loss_mean_;
  prometheus::Family<prometheus::Gauge>* validation_loss_;
  prometheus::Family<prometheus::Gauge>* tokens_per_second_;
  prometheus::Family<prometheus::Gauge>* samples_per_second_;
  prometheus::Family<prometheus::Gauge>* batch_share_;
  prometheus::Counter* state_transfers_;
  prometheus::Counter* state_transfer_bytes_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, WorkerSeries> workers_ ABSL_GUARDED_BY(mu_);
  // The latest loss of each present worker that has reported one.
  absl::flat_hash_map<std::string, double> latest_loss_ ABSL_GUARDED_BY(mu_);
  // demod_training_loss_mean's only series; absent (nullptr) while no present worker has a
  // loss, rather than a misleading 0.
  prometheus::Gauge* loss_mean_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace demod

#endif  // DEMOD_SERVER_COORDINATOR_METRICS_H_
