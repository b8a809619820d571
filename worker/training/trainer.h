// The training loop of one worker in a coordinated run: join, receive the run's parameters,
// then forward, backward and a DeMo step through the coordinator, step after step, until the
// run finishes, the worker's step budget is spent, or a stop is requested.
//
// Per step it reports loss, tokens and compute time (and a validation loss every few steps)
// to the coordinator, writes a CSV line, and every fingerprint_interval steps sends a hash of
// its parameters. Its data shard follows the step's contributors (its rank among them and
// their number), so shards stay disjoint as workers come and go.
//
// Faults: when the coordinator is unreachable or goes away the worker reconnects with
// exponential backoff and jitter for up to reconnect_for, joins again (its momentum kept) and
// continues at the run's step; a resync notice makes it load fresh parameters; a checkpoint
// (parameters, momentum, step) is saved every checkpoint_interval steps and on stop, and loaded at
// start.
//
// Run is called once, from one thread; RequestStop may be called from any thread.
#ifndef DEMOD_WORKER_TRAINING_TRAINER_H_
#define DEMOD_WORKER_TRAINING_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/client/coordinator_client.h"
#include "worker/models/dataset.h"
#include "worker/models/model.h"

namespace demod {

struct TrainerOptions {
  ClientOptions client;          // address, credentials, the join's name and hardware
  at::Device device = at::kCPU;  // where batches go (the model is there already)
  int64_t batch_size = 16;
  int micro_batches = 1;  // gradients of this many batches are summed per step
  int64_t max_steps = 0;  // leave after this many steps; 0: until the run finishes
  int64_t validation_interval = 10;
  // Held-out samples per validation (text: windows spread evenly over the validation split),
  // evaluated kValidationPart at a time.
  int64_t validation_samples = 64;
  static constexpr int64_t kValidationPart = 64;
  std::string csv_path;        // a line per step; empty for none
  std::string checkpoint_dir;  // empty: no checkpoints
  int64_t checkpoint_interval = 50;
  bool progress = false;  // a live status line on stderr
  absl::Duration step_timeout = absl::Minutes(10);
  // How long to keep reconnecting through one outage (the coordinator unreachable, or its
  // stream ending with UNAVAILABLE) before giving up with its last status. A connection that
  // trained ends the outage. Long enough for a coordinator to be rescheduled and restarted.
  absl::Duration reconnect_for = absl::Minutes(8);
  absl::Duration backoff_initial = absl::Milliseconds(250);
  absl::Duration backoff_max = absl::Seconds(10);
  // Fault injection for tests: after this step, nudge one parameter of this worker only, so
  // its next fingerprint disagrees and the coordinator resyncs it. 0: never.
  int64_t fault_perturb_step = 0;
  // For benchmarks of mixed fleets: after each step's compute, sleep (slowdown - 1) times as
  // long, so this worker behaves like one `slowdown` times slower (its reported throughput
  // too). 1: off.
  double compute_slowdown = 1.0;
};

struct TrainingSummary {
  int64_t steps = 0;          // steps this worker computed a payload for
  int64_t steps_skipped = 0;  // steps that closed before it could: their aggregates applied
  int64_t last_step = 0;      // the run's step its parameters are at
  double last_loss = 0;
  double last_validation_loss = 0;  // NaN when never measured
  int64_t bytes_sent = 0;           // payload bytes
  int64_t bytes_received = 0;       // aggregate bytes
  int64_t dense_fp32_bytes = 0;     // what an fp32 gradient exchange would have sent
  double wall_seconds = 0;
  bool run_finished = false;
  uint64_t fingerprint = 0;  // of the final parameters
};

class Trainer {
 public:
  // `model` and `dataset` must outlive the trainer; the model's parameters live on their
  // device already.
  Trainer(Model* model, Dataset* dataset, TrainerOptions options);
  ~Trainer();

  // OK when the run finished, the step budget was spent or a stop was requested; otherwise
  // why the worker could not go on (refused join, unreachable coordinator, bad data...).
  absl::StatusOr<TrainingSummary> Run();

  // Finish the step in progress, save a checkpoint and leave.
  void RequestStop() { stop_.store(true); }

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace demod

#endif  // DEMOD_WORKER_TRAINING_TRAINER_H_
