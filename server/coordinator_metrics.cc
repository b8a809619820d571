#include "server/coordinator_metrics.h"

#include <cmath>
#include <utility>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace demod {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Registry;

constexpr LeaveReason kLeaveReasons[] = {LeaveReason::kDisconnected, LeaveReason::kInvalidMessage,
                                         LeaveReason::kShutdown, LeaveReason::kFinished,
                                         LeaveReason::kSlowConsumer};
constexpr EvictionReason kEvictionReasons[] = {
    EvictionReason::kMissedSteps, EvictionReason::kHeartbeat, EvictionReason::kNoDonor};

// 1 ms doubling to 131 s: a step on loopback takes milliseconds, one waiting for a straggler
// on a slow link can take the adaptive deadline's ceiling (minutes at most). Doubling keeps
// the relative error of a quantile estimate under 2x with only 18 series per histogram.
Histogram::BucketBoundaries SecondsBuckets() {
  Histogram::BucketBoundaries buckets;
  double bound = 0.001;
  for (int i = 0; i < 18; ++i, bound *= 2) buckets.push_back(bound);
  return buckets;
}

Family<Counter>& CounterFamily(Registry& registry, const std::string& name,
                               const std::string& help) {
  return BuildCounter().Name(name).Help(help).Register(registry);
}

Family<Gauge>& GaugeFamily(Registry& registry, const std::string& name, const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(registry);
}

prometheus::Labels WorkerLabel(const std::string& worker) { return {{"worker", worker}}; }

}  // namespace

const char* LeaveReasonLabel(LeaveReason reason) {
  switch (reason) {
    case LeaveReason::kDisconnected:
      return "disconnected";
    case LeaveReason::kInvalidMessage:
      return "invalid_message";
    case LeaveReason::kShutdown:
      return "shutdown";
    case LeaveReason::kFinished:
      return "finished";
    case LeaveReason::kSlowConsumer:
      return "slow_consumer";
  }
  return "unknown";
}

const char* EvictionReasonLabel(EvictionReason reason) {
  switch (reason) {
    case EvictionReason::kMissedSteps:
      return "missed_steps";
    case EvictionReason::kHeartbeat:
      return "heartbeat";
    case EvictionReason::kNoDonor:
      return "no_donor";
  }
  return "unknown";
}

CoordinatorMetrics::CoordinatorMetrics(const std::string& run_id)
    : registry_(std::make_shared<Registry>()) {
  Registry& r = *registry_;
  GaugeFamily(r, "demod_run_info", "Always 1; its run_id label names the run being coordinated.")
      .Add({{"run_id", run_id}})
      .Set(1);
  active_workers_ =
      &GaugeFamily(r, "demod_active_workers", "Workers currently contributing to steps.").Add({});
  current_step_ =
      &GaugeFamily(r, "demod_current_step", "The last completed training step.").Add({});
  total_steps_ = &GaugeFamily(r, "demod_total_steps", "The step the run finishes at.").Add({});
  min_workers_ =
      &GaugeFamily(r, "demod_min_workers", "Workers the run needs to take steps; fewer pause it.")
           .Add({});
  learning_rate_ = &GaugeFamily(r, "demod_learning_rate",
                                "The learning rate of the last completed step's update.")
                        .Add({});
  paused_ = &GaugeFamily(r, "demod_paused",
                         "1 while the run is paused for lack of workers (fewer than min_workers), "
                         "else 0.")
                 .Add({});
  joins_ = &CounterFamily(r, "demod_joins_total", "Workers admitted to the run.").Add({});
  leaves_ = &CounterFamily(r, "demod_leaves_total", "Workers that left the run, by reason.");
  for (LeaveReason reason : kLeaveReasons) leaves_->Add({{"reason", LeaveReasonLabel(reason)}});
  evictions_ = &CounterFamily(r, "demod_evictions_total",
                              "Workers the coordinator removed from the run, by reason.");
  for (EvictionReason reason : kEvictionReasons) {
    evictions_->Add({{"reason", EvictionReasonLabel(reason)}});
  }
  step_duration_ = &BuildHistogram()
                        .Name("demod_step_duration_seconds")
                        .Help("Time from a step opening to its closing.")
                        .Register(r)
                        .Add({}, SecondsBuckets());
  barrier_wait_ = &BuildHistogram()
                       .Name("demod_barrier_wait_seconds")
                       .Help(
                           "Time from a step's first contribution to its close (its last "
                           "contribution, or its deadline): the cost of stragglers.")
                       .Register(r)
                       .Add({}, SecondsBuckets());
  steps_ = &CounterFamily(r, "demod_steps_total", "Steps closed.").Add({});
  state_save_failures_ =
      &CounterFamily(r, "demod_state_save_failures_total",
                     "Saves of the run's state to the state directory that failed: a restart "
                     "would resume from an older state.")
           .Add({});
  seed_rollbacks_ =
      &CounterFamily(r, "demod_seed_rollbacks_total",
                     "Times a worker behind the run's completed steps became its seed "
                     "because no more current one came back within the stale seed "
                     "grace: the run went on from older parameters.")
           .Add({});
  seed_rollback_steps_ =
      &CounterFamily(r, "demod_seed_rollback_steps_total",
                     "Steps of training undone by the seed rollbacks (demod_seed_rollbacks_total).")
           .Add({});
  step_contributors_ = &GaugeFamily(r, "demod_step_contributors",
                                    "Workers whose payload the last closed step included.")
                            .Add({});
  step_expected_contributors_ =
      &GaugeFamily(r, "demod_step_expected_contributors",
                   "Workers the last closed step expected a payload from.")
           .Add({});
  consecutive_short_steps_ =
      &GaugeFamily(r, "demod_consecutive_short_steps",
                   "Steps in a row, up to the last closed one, that closed with fewer "
                   "contributors than expected; 0 after a full step.")
           .Add({});
  worker_evictions_ = &CounterFamily(r, "demod_worker_evictions_total",
                                     "Times the coordinator removed each worker from the run.");
  worker_info_ = &GaugeFamily(r, "demod_worker_info",
                              "Always 1 for each present worker; its labels name the hardware "
                              "it joined with (device_kind: cpu, cuda; device_name).");
  dense_equivalent_bytes_ =
      &CounterFamily(r, "demod_dense_equivalent_bytes_total",
                     "Bytes an fp32 all-reduce of the gradients would have moved for the steps "
                     "closed; compare with demod_received_bytes_total + demod_sent_bytes_total.")
           .Add({});
  received_bytes_ = &CounterFamily(r, "demod_received_bytes_total",
                                   "Bytes the coordinator received from all workers.")
                         .Add({});
  sent_bytes_ =
      &CounterFamily(r, "demod_sent_bytes_total", "Bytes the coordinator sent to all workers.")
           .Add({});
  worker_received_bytes_ = &CounterFamily(r, "demod_worker_received_bytes_total",
                                          "Bytes the coordinator received from each worker.");
  worker_sent_bytes_ = &CounterFamily(r, "demod_worker_sent_bytes_total",
                                      "Bytes the coordinator sent to each worker.");
  worker_payload_bytes_ =
      &CounterFamily(r, "demod_worker_payload_bytes_total",
                     "Bytes of the encoded payloads received from each worker (no framing).");
  worker_aggregate_bytes_ =
      &CounterFamily(r, "demod_worker_aggregate_bytes_total",
                     "Bytes of the encoded aggregates sent to each worker (no framing).");
  late_contributions_ = &CounterFamily(r, "demod_late_contributions_total",
                                       "Payloads that arrived after their step had closed.");
  missed_contributions_ = &CounterFamily(r, "demod_missed_contributions_total",
                                         "Steps that closed without the worker's payload.");
  tokens_ = &CounterFamily(r, "demod_tokens_total", "Training tokens each worker reports done.");
  fingerprint_mismatches_ =
      &CounterFamily(r, "demod_fingerprint_mismatches_total",
                     "Reports whose parameter fingerprint disagreed with the run's: the worker's "
                     "parameters diverged.");
  training_loss_ = &GaugeFamily(r, "demod_training_loss", "Each present worker's latest loss.");
  training_loss_mean_ = &GaugeFamily(r, "demod_training_loss_mean",
                                     "Mean of the latest loss of the workers present.");
  validation_loss_ = &GaugeFamily(r, "demod_validation_loss",
                                  "Each present worker's latest measured validation loss.");
  tokens_per_second_ =
      &GaugeFamily(r, "demod_tokens_per_second",
                   "Each present worker's training throughput over its latest report, in tokens "
                   "per second of compute.");
  samples_per_second_ =
      &GaugeFamily(r, "demod_worker_samples_per_second",
                   "Each present worker's compute throughput over its latest report, in samples "
                   "(sequences, images) per second of forward and backward.");
  batch_share_ = &GaugeFamily(r, "demod_worker_batch_samples",
                              "With batch balancing: the samples per step each present worker "
                              "was told to compute, its share of the global batch.");
  state_transfers_ = &CounterFamily(r, "demod_state_transfers_total",
                                    "Parameter transfers from a donor to a joining worker.")
                          .Add({});
  state_transfer_bytes_ = &CounterFamily(r, "demod_state_transfer_bytes_total",
                                         "Bytes of parameters streamed to joining workers.")
                               .Add({});
}

CoordinatorMetrics::~CoordinatorMetrics() = default;

void CoordinatorMetrics::SetRunLimits(int64_t total_steps, int min_workers) {
  total_steps_->Set(static_cast<double>(total_steps));
  min_workers_->Set(min_workers);
}

void CoordinatorMetrics::SetActiveWorkers(int n) { active_workers_->Set(n); }

void CoordinatorMetrics::SetCurrentStep(int64_t step) {
  current_step_->Set(static_cast<double>(step));
}

void CoordinatorMetrics::SetLearningRate(double lr) { learning_rate_->Set(lr); }

void CoordinatorMetrics::SetPaused(bool paused) { paused_->Set(paused ? 1 : 0); }

void CoordinatorMetrics::StateSaveFailed() { state_save_failures_->Increment(); }

void CoordinatorMetrics::SeedRolledBack(int64_t steps) {
  seed_rollbacks_->Increment();
  seed_rollback_steps_->Increment(static_cast<double>(steps));
}

CoordinatorMetrics::WorkerSeries& CoordinatorMetrics::SeriesLocked(const std::string& worker) {
  auto it = workers_.find(worker);
  if (it != workers_.end()) return it->second;
  const prometheus::Labels labels = WorkerLabel(worker);
  WorkerSeries series;
  series.received_bytes = &worker_received_bytes_->Add(labels);
  series.sent_bytes = &worker_sent_bytes_->Add(labels);
  series.late = &late_contributions_->Add(labels);
  series.missed = &missed_contributions_->Add(labels);
  series.tokens = &tokens_->Add(labels);
  series.fingerprint_mismatches = &fingerprint_mismatches_->Add(labels);
  series.evictions = &worker_evictions_->Add(labels);
  series.payload_bytes = &worker_payload_bytes_->Add(labels);
  series.aggregate_bytes = &worker_aggregate_bytes_->Add(labels);
  return workers_.emplace(worker, series).first->second;
}

void CoordinatorMetrics::WorkerJoined(const std::string& worker, const std::string& device_kind,
                                      const std::string& device_name) {
  joins_->Increment();
  absl::MutexLock lock(&mu_);
  WorkerSeries& series = SeriesLocked(worker);
  // A rejoin may bring other hardware under the same name: one info series per worker.
  if (series.info != nullptr) worker_info_->Remove(series.info);
  series.info = &worker_info_->Add(
      {{"worker", worker}, {"device_kind", device_kind}, {"device_name", device_name}});
  series.info->Set(1);
}

void CoordinatorMetrics::WorkerLeft(const std::string& worker, LeaveReason reason) {
  leaves_->Add({{"reason", LeaveReasonLabel(reason)}}).Increment();
  absl::MutexLock lock(&mu_);
  RemoveGaugesLocked(worker);
}

void CoordinatorMetrics::WorkerEvicted(const std::string& worker, EvictionReason reason) {
  evictions_->Add({{"reason", EvictionReasonLabel(reason)}}).Increment();
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).evictions->Increment();
  RemoveGaugesLocked(worker);
}

void CoordinatorMetrics::RemoveWorker(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  RemoveGaugesLocked(worker);
}

void CoordinatorMetrics::RemoveGaugesLocked(const std::string& worker) {
  auto it = workers_.find(worker);
  if (it != workers_.end()) {
    WorkerSeries& series = it->second;
    if (series.loss != nullptr) training_loss_->Remove(series.loss);
    if (series.validation_loss != nullptr) validation_loss_->Remove(series.validation_loss);
    if (series.tokens_per_second != nullptr) tokens_per_second_->Remove(series.tokens_per_second);
    if (series.info != nullptr) worker_info_->Remove(series.info);
    if (series.samples_per_second != nullptr) {
      samples_per_second_->Remove(series.samples_per_second);
    }
    if (series.batch_share != nullptr) batch_share_->Remove(series.batch_share);
    series.loss = series.validation_loss = series.tokens_per_second = series.info = nullptr;
    series.samples_per_second = series.batch_share = nullptr;
  }
  if (latest_loss_.erase(worker) > 0) UpdateLossMeanLocked();
}

void CoordinatorMetrics::UpdateLossMeanLocked() {
  if (latest_loss_.empty()) {
    if (loss_mean_ != nullptr) training_loss_mean_->Remove(loss_mean_);
    loss_mean_ = nullptr;
    return;
  }
  double sum = 0;
  for (const auto& [worker, loss] : latest_loss_) sum += loss;
  if (loss_mean_ == nullptr) loss_mean_ = &training_loss_mean_->Add({});
  loss_mean_->Set(sum / static_cast<double>(latest_loss_.size()));
}

void CoordinatorMetrics::StepClosed(double duration_s, double barrier_wait_s, int contributors,
                                    int expected, uint64_t dense_equivalent_bytes) {
  step_duration_->Observe(duration_s);
  barrier_wait_->Observe(barrier_wait_s);
  steps_->Increment();
  step_contributors_->Set(contributors);
  step_expected_contributors_->Set(expected);
  consecutive_short_steps_->Set(contributors < expected ? consecutive_short_steps_->Value() + 1
                                                        : 0);
  dense_equivalent_bytes_->Increment(static_cast<double>(dense_equivalent_bytes));
}

void CoordinatorMetrics::BytesReceived(const std::string& worker, uint64_t n) {
  const double bytes = static_cast<double>(n);
  received_bytes_->Increment(bytes);
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).received_bytes->Increment(bytes);
}

void CoordinatorMetrics::BytesSent(const std::string& worker, uint64_t n) {
  const double bytes = static_cast<double>(n);
  sent_bytes_->Increment(bytes);
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).sent_bytes->Increment(bytes);
}

void CoordinatorMetrics::PayloadReceived(const std::string& worker, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).payload_bytes->Increment(static_cast<double>(bytes));
}

void CoordinatorMetrics::AggregateSent(const std::string& worker, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).aggregate_bytes->Increment(static_cast<double>(bytes));
}

void CoordinatorMetrics::ContributionLate(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).late->Increment();
}

void CoordinatorMetrics::ContributionMissed(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).missed->Increment();
}

void CoordinatorMetrics::Report(const std::string& worker, double loss, double validation_loss,
                                uint64_t tokens, double compute_seconds) {
  const prometheus::Labels labels = WorkerLabel(worker);
  absl::MutexLock lock(&mu_);
  WorkerSeries& series = SeriesLocked(worker);
  if (series.loss == nullptr) series.loss = &training_loss_->Add(labels);
  series.loss->Set(loss);
  latest_loss_[worker] = loss;
  UpdateLossMeanLocked();
  if (!std::isnan(validation_loss)) {
    if (series.validation_loss == nullptr) series.validation_loss = &validation_loss_->Add(labels);
    series.validation_loss->Set(validation_loss);
  }
  series.tokens->Increment(static_cast<double>(tokens));
  if (compute_seconds > 0) {
    if (series.tokens_per_second == nullptr) {
      series.tokens_per_second = &tokens_per_second_->Add(labels);
    }
    series.tokens_per_second->Set(static_cast<double>(tokens) / compute_seconds);
  }
}

void CoordinatorMetrics::Throughput(const std::string& worker, double samples_per_second) {
  absl::MutexLock lock(&mu_);
  WorkerSeries& series = SeriesLocked(worker);
  if (series.samples_per_second == nullptr) {
    series.samples_per_second = &samples_per_second_->Add(WorkerLabel(worker));
  }
  series.samples_per_second->Set(samples_per_second);
}

void CoordinatorMetrics::BatchShare(const std::string& worker, int64_t samples) {
  absl::MutexLock lock(&mu_);
  WorkerSeries& series = SeriesLocked(worker);
  if (series.batch_share == nullptr) series.batch_share = &batch_share_->Add(WorkerLabel(worker));
  series.batch_share->Set(static_cast<double>(samples));
}

void CoordinatorMetrics::FingerprintMismatch(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  SeriesLocked(worker).fingerprint_mismatches->Increment();
}

void CoordinatorMetrics::StateTransfer(uint64_t bytes) {
  state_transfers_->Increment();
  state_transfer_bytes_->Increment(static_cast<double>(bytes));
}

}  // namespace demod
