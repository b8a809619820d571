// A worker's membership in a coordinated DeMo run, for a training loop of its own: join with
// the model's parameters, then one Step per batch after backward().
//
//   demod::SessionOptions options;
//   options.client.target = "127.0.0.1:7070";
//   options.client.join.set_worker_name("my-worker");
//   auto session = demod::DemoSession::Join(options, ToNamedTensors(model->named_parameters()));
//   while (!(*session)->finished()) {
//     if (*(*session)->SkipClosedSteps() > 0) continue;  // behind the run (check ok() too)
//     at::Tensor loss = Loss(model, NextBatch());
//     loss.backward();
//     absl::Status s = (*session)->Step(samples);   // exchange, aggregate, update, zero grads
//     (*session)->Report(loss.item<double>(), tokens, compute_seconds, kNaN, samples);
//   }
//
// Join announces the parameters' table, takes the run's optimizer settings and schedule from
// the coordinator and makes the parameters the run's (the first worker's own, or a donor's
// relayed through the coordinator, with the aggregates closed since applied). Step applies the
// learning rate of the step, exchanges the DeMo payload, applies the aggregate, clears the
// gradients and, every fingerprint_interval steps, reports a fingerprint of the parameters;
// when the coordinator finds this worker's parameters diverged it reloads them before
// returning. The complete program: worker/example_main.cc; docs/worker.md.
//
// One thread at a time. A session is one connection: after an UNAVAILABLE or ABORTED status
// (the coordinator went away, or evicted this worker), Join again, passing momentum() on to
// keep this worker's momentum (worker/training/trainer.h does this, with backoff).
#ifndef DEMOD_WORKER_TRAINING_DEMO_SESSION_H_
#define DEMOD_WORKER_TRAINING_DEMO_SESSION_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/run_config.h"
#include "worker/client/coordinator_client.h"
#include "worker/optimizer/demo_optimizer.h"
#include "worker/optimizer/step_optimizer.h"
#include "worker/training/coordinator_exchange.h"

namespace demod {

struct SessionOptions {
  ClientOptions client;  // address, credentials, name, hardware; the tensor table is filled in
  // The worker's momentum from an earlier session or a checkpoint (DemoSession::momentum());
  // empty for zeros.
  std::string momentum;
  absl::Duration step_timeout = absl::Minutes(10);
  // When set and it turns true, a wait for the coordinator ends with CANCELLED (a signal
  // handler's stop request, say).
  const std::atomic<bool>* stop = nullptr;
};

class DemoSession {
 public:
  // OUT_OF_RANGE when the run has finished (every status of the session says so with that
  // code), UNAVAILABLE when the coordinator cannot be reached, or its refusal
  // (UNAUTHENTICATED, FAILED_PRECONDITION for a different tensor table, ...).
  static absl::StatusOr<std::unique_ptr<DemoSession>> Join(SessionOptions options,
                                                           std::vector<NamedTensor> parameters);
  ~DemoSession();

  // One DeMo step from the parameters' gradients; see the header comment. `samples`: those
  // behind the gradients, which a run with batch.weighting "samples" weighs this worker's
  // contribution by (it refuses a payload without them); 0: not said.
  absl::Status Step(uint64_t samples = 0);
  // Call before computing a step's gradients. Applies the aggregates of the steps that have
  // already closed without this worker (it fell behind: slower than the step deadline, or its
  // payload was late), so that it computes for a step still open rather than for one whose
  // payload the coordinator would refuse. Returns how many steps it applied this way (0 when
  // it is current); next_step() moves on by as many.
  absl::StatusOr<int> SkipClosedSteps();
  // Loss and throughput of the last step, for the coordinator's metrics (validation_loss NaN
  // when not measured). `samples`: those behind the step's gradient; with compute_seconds they
  // are the throughput batch balancing shares the global batch by.
  absl::Status Report(double loss, uint64_t tokens, double compute_seconds,
                      double validation_loss = std::numeric_limits<double>::quiet_NaN(),
                      uint64_t samples = 0);
  // With batch balancing (global_batch() > 0), the samples to compute for the next step: the
  // coordinator's last share (0 until the first arrives). 0 without balancing.
  uint64_t batch_samples() const { return exchange_->batch_samples(); }
  int64_t global_batch() const { return client_->welcome().run().global_batch(); }

  bool finished() const { return finished_; }
  int64_t next_step() const { return optimizer_->step_count() + 1; }
  int64_t total_steps() const { return total_steps_; }
  double lr() const { return optimizer_->lr(); }
  const std::string& run_id() const { return client_->welcome().run().run_id(); }
  uint32_t worker_id() const { return client_->worker_id(); }
  const std::vector<uint32_t>& last_contributors() const { return exchange_->last_contributors(); }
  const StepTraffic& last_traffic() const { return optimizer_->last_traffic(); }
  // This worker's own optimizer state (DeMo's momentum), serialized (parameter_state.h), for a
  // checkpoint or a next session.
  std::string momentum() const;
  // DeMo, or the dense AdamW baseline, as the run says.
  OptimizerConfig::Algorithm algorithm() const { return optimizer_config_.algorithm; }

 private:
  DemoSession() = default;

  // Every fingerprint_interval steps: this worker's vote on the parameters after `step`.
  absl::Status SendFingerprintIfDue(int64_t step);

  std::vector<NamedTensor> parameters_;
  std::unique_ptr<CoordinatorClient> client_;
  std::unique_ptr<CoordinatorExchange> exchange_;
  std::unique_ptr<StepOptimizer> optimizer_;  // DeMo, or the dense AdamW baseline
  OptimizerConfig optimizer_config_;          // the run's, from the Welcome
  int64_t total_steps_ = 0;
  bool finished_ = false;
};

}  // namespace demod

#endif  // DEMOD_WORKER_TRAINING_DEMO_SESSION_H_
