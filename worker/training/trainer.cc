#include "worker/training/trainer.h"

#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/optimizer/parameter_state.h"
#include "worker/training/checkpoint.h"
#include "worker/training/demo_session.h"

namespace demod {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The stream ended in a way a new connection can fix: the coordinator went away, restarted,
// evicted this worker, or stopped answering.
bool Reconnectable(const absl::Status& status) {
  // ALREADY_EXISTS / RESOURCE_EXHAUSTED: this worker's previous stream has not been noticed
  // gone yet (it is evicted within the heartbeat timeout).
  return absl::IsUnavailable(status) || absl::IsAborted(status) ||
         absl::IsDeadlineExceeded(status) || absl::IsCancelled(status) ||
         absl::IsAlreadyExists(status) || absl::IsResourceExhausted(status);
}

std::string HumanBytes(double bytes) {
  if (bytes >= 1 << 20) return absl::StrFormat("%.1f MB", bytes / (1 << 20));
  if (bytes >= 1 << 10) return absl::StrFormat("%.1f kB", bytes / (1 << 10));
  return absl::StrFormat("%.0f B", bytes);
}

}  // namespace

class Trainer::Impl {
 public:
  Impl(Model* model, Dataset* dataset, TrainerOptions options, const std::atomic<bool>* stop)
      : model_(model),
        dataset_(dataset),
        options_(std::move(options)),
        stop_(stop),
        parameters_(model->NamedParameters()) {}

  absl::StatusOr<TrainingSummary> Run() {
    const absl::Time started = absl::Now();
    DEMOD_RETURN_IF_ERROR(LoadCheckpointIfAny());
    if (!options_.csv_path.empty()) {
      csv_.open(options_.csv_path, std::ios::app);
      if (!csv_) return absl::UnavailableError(absl::StrCat("cannot write ", options_.csv_path));
      if (csv_.tellp() == 0) {
        csv_ << "step,wall_s,loss,validation_loss,tokens,tokens_per_s,step_s,compute_s,"
                "bytes_up,bytes_down,dense_fp32_bytes,lr,contributors\n";
      }
    }
    int failures = 0;
    absl::Time give_up_at = absl::InfiniteFuture();  // set when an outage begins
    while (true) {
      absl::Status attempt = Connected();
      if (attempt.ok() || done_) break;
      if (!Reconnectable(attempt)) return attempt;
      const absl::Time now = absl::Now();
      // A connection that trained is not part of an outage: a new one begins.
      if (made_progress_ || failures == 0) {
        failures = 0;
        give_up_at = now + options_.reconnect_for;
      }
      made_progress_ = false;
      ++failures;
      if (now >= give_up_at) {
        return absl::Status(attempt.code(),
                            absl::StrCat("giving up after ", failures - 1, " reconnection attempts",
                                         " in ", absl::FormatDuration(options_.reconnect_for),
                                         " (--reconnect_for): ", attempt.message()));
      }
      const absl::Duration wait = std::min(Backoff(failures), give_up_at - now);
      Log(LogLevel::kWarning,
          absl::StrCat(attempt.message(), "; reconnecting in ", absl::FormatDuration(wait),
                       ", giving up in ",
                       absl::FormatDuration(absl::Ceil(give_up_at - now, absl::Seconds(1))),
                       " (--reconnect_for)"));
      absl::SleepFor(wait);
      if (stop_->load()) break;
    }
    if (options_.progress) std::fprintf(stderr, "\n");
    DEMOD_RETURN_IF_ERROR(SaveCheckpointIfAny());
    summary_.wall_seconds = absl::ToDoubleSeconds(absl::Now() - started);
    summary_.fingerprint = Fingerprint(parameters_);
    return summary_;
  }

 private:
  // One connection's worth of training; OK when the worker is done (run finished, budget
  // spent, stop requested).
  absl::Status Connected() {
    SessionOptions session_options;
    session_options.client = options_.client;
    session_options.client.join.set_resume_step(summary_.last_step);
    if (!run_id_.empty()) session_options.client.join.set_run_id(run_id_);
    session_options.momentum = momentum_;  // this worker's own, across reconnections
    session_options.step_timeout = options_.step_timeout;
    session_options.stop = stop_;
    absl::StatusOr<std::unique_ptr<DemoSession>> session =
        DemoSession::Join(std::move(session_options), parameters_);
    if (absl::IsOutOfRange(session.status())) {
      summary_.run_finished = done_ = true;  // it finished while this worker was away
      return absl::OkStatus();
    }
    if (!session.ok()) return StoppedOr(session.status());
    run_id_ = (*session)->run_id();
    total_steps_ = (*session)->total_steps();
    absl::Status status = Train(**session);
    momentum_ = (*session)->momentum();
    return StoppedOr(status);
  }

  // A wait cut short by a stop request is the end of this worker's work, not a failure.
  absl::Status StoppedOr(const absl::Status& status) {
    if (absl::IsCancelled(status) && stop_->load()) {
      done_ = true;
      return absl::OkStatus();
    }
    return status;
  }

  absl::Status Train(DemoSession& session) {
    summary_.last_step = session.next_step() - 1;
    while (true) {
      if (session.finished()) {
        summary_.run_finished = done_ = true;
        return absl::OkStatus();
      }
      if (stop_->load() || (options_.max_steps > 0 && summary_.steps >= options_.max_steps)) {
        done_ = true;
        return absl::OkStatus();
      }
      // Behind the run (slower than the deadline, or a payload came late): steps that already
      // closed are applied without computing a payload the coordinator would refuse.
      DEMOD_ASSIGN_OR_RETURN(const int skipped, session.SkipClosedSteps());
      if (skipped > 0) {
        summary_.steps_skipped += skipped;
        summary_.last_step = session.next_step() - 1;
        made_progress_ = true;
        continue;
      }
      const int64_t step = session.next_step();
      const absl::Time step_started = absl::Now();
      // Forward and backward over the micro-batches; gradients add up in .grad(). With batch
      // balancing the step's samples are the coordinator's share, in micro-batches of at most
      // batch_size (the last one smaller); each micro-batch's mean loss weighs by its samples.
      model_->SetTraining(true);
      const StepBatches batches = BatchesOf(session);
      double loss_sum = 0;
      int64_t tokens = 0;
      for (int64_t m = 0; m < batches.count; ++m) {
        const int64_t size =
            std::min(options_.batch_size, batches.samples - m * options_.batch_size);
        // Batches follow the step, so a worker that restarts draws what it would have.
        Batch batch = dataset_->TrainBatch(step * batches.stride + m, size, options_.device);
        DEMOD_ASSIGN_OR_RETURN(at::Tensor loss, model_->Loss(batch));
        // The micro-batch's part of the step's samples (micro_batches without balancing).
        const double parts = static_cast<double>(batches.samples) / static_cast<double>(size);
        (loss / parts).backward();
        loss_sum += loss.item<double>() / parts;
        tokens += batch.tokens;
      }
      const double loss = loss_sum;
      if (options_.compute_slowdown > 1) {
        absl::SleepFor((options_.compute_slowdown - 1) * (absl::Now() - step_started));
      }
      const double compute_seconds = absl::ToDoubleSeconds(absl::Now() - step_started);
      DEMOD_RETURN_IF_ERROR(session.Step(static_cast<uint64_t>(batches.samples)));
      if (session.next_step() <= step) continue;  // the run ended before this step closed
      made_progress_ = true;
      if (step == options_.fault_perturb_step) {
        at::NoGradGuard no_grad;
        parameters_.front().second.view(-1)[0].add_(1e-3);
        Log(LogLevel::kWarning, absl::StrCat("fault injection: nudged '", parameters_.front().first,
                                             "' after step ", step));
      }
      const StepTraffic& traffic = session.last_traffic();
      ++summary_.steps;
      summary_.last_step = step;
      summary_.last_loss = loss;
      summary_.bytes_sent += traffic.bytes_sent;
      summary_.bytes_received += traffic.bytes_received;
      summary_.dense_fp32_bytes += traffic.dense_fp32_bytes;
      Reshard(session.last_contributors(), session.worker_id());

      double validation_loss = kNaN;
      if (options_.validation_interval > 0 && step % options_.validation_interval == 0) {
        DEMOD_ASSIGN_OR_RETURN(validation_loss, ValidationLoss());
        summary_.last_validation_loss = validation_loss;
      }
      DEMOD_RETURN_IF_ERROR(session.Report(loss, static_cast<uint64_t>(tokens), compute_seconds,
                                           validation_loss,
                                           static_cast<uint64_t>(batches.samples)));
      const double step_seconds = absl::ToDoubleSeconds(absl::Now() - step_started);
      Record(step, loss, validation_loss, tokens, compute_seconds, step_seconds, traffic,
             session.lr(), session.last_contributors().size());
      if (!options_.checkpoint_dir.empty() && options_.checkpoint_interval > 0 &&
          step % options_.checkpoint_interval == 0) {
        momentum_ = session.momentum();
        DEMOD_RETURN_IF_ERROR(SaveCheckpointIfAny());
      }
    }
  }

  // A step's samples and its micro-batches. `stride`: the data index of step s's micro-batch m
  // is s * stride + m, unique for every step whatever its share.
  struct StepBatches {
    int64_t samples;
    int64_t count;
    int64_t stride;
  };
  StepBatches BatchesOf(const DemoSession& session) const {
    const int64_t own = options_.batch_size * options_.micro_batches;
    if (session.global_batch() <= 0) return {own, options_.micro_batches, options_.micro_batches};
    // Until the coordinator's first share, the worker's own batch, within the global one.
    const int64_t samples = session.batch_samples() > 0
                                ? static_cast<int64_t>(session.batch_samples())
                                : std::min(own, session.global_batch());
    const auto micro_batches = [&](int64_t n) {
      return (n + options_.batch_size - 1) / options_.batch_size;
    };
    return {samples, micro_batches(samples), micro_batches(session.global_batch())};
  }

  absl::StatusOr<double> ValidationLoss() {
    model_->SetTraining(false);
    const Batch batch = dataset_->ValidationBatch(options_.validation_samples, options_.device);
    absl::StatusOr<double> loss = MeanLossInParts(*model_, batch, TrainerOptions::kValidationPart);
    model_->SetTraining(true);
    return loss;
  }

  // Shards follow the step's contributors: this worker's rank among them and their count.
  void Reshard(const std::vector<uint32_t>& contributors, uint32_t self) {
    auto it = std::find(contributors.begin(), contributors.end(), self);
    if (it == contributors.end()) return;
    const int rank = static_cast<int>(it - contributors.begin());
    const int world = static_cast<int>(contributors.size());
    if (rank == rank_ && world == world_) return;
    rank_ = rank;
    world_ = world;
    if (absl::Status sharded = dataset_->Shard(rank, world); !sharded.ok()) {
      Log(LogLevel::kWarning, absl::StrCat("keeping the previous data shard: ", sharded.message()));
      return;
    }
    Log(LogLevel::kInfo, absl::StrCat("data shard ", rank + 1, " of ", world));
  }

  void Record(int64_t step, double loss, double validation_loss, int64_t tokens,
              double compute_seconds, double step_seconds, const StepTraffic& traffic, double lr,
              size_t contributors) {
    const double tokens_per_second = compute_seconds > 0 ? tokens / compute_seconds : 0;
    if (csv_.is_open()) {
      csv_ << step << ','
           << absl::StrFormat("%.3f", absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch())) << ','
           << absl::StrFormat("%.6g", loss) << ','
           << (std::isnan(validation_loss) ? std::string()
                                           : absl::StrFormat("%.6g", validation_loss))
           << ',' << tokens << ',' << absl::StrFormat("%.1f", tokens_per_second) << ','
           << absl::StrFormat("%.4f", step_seconds) << ','
           << absl::StrFormat("%.4f", compute_seconds) << ',' << traffic.bytes_sent << ','
           << traffic.bytes_received << ',' << traffic.dense_fp32_bytes << ','
           << absl::StrFormat("%.6g", lr) << ',' << contributors << '\n';
      csv_.flush();
    }
    const std::string line = absl::StrFormat(
        "step %d/%d  loss %.4f  val %s  %.0f tok/s  up %s  down %s  (fp32 all-reduce: %s)", step,
        total_steps_, loss,
        std::isnan(summary_.last_validation_loss)
            ? std::string("-")
            : absl::StrFormat("%.4f", summary_.last_validation_loss),
        tokens_per_second, HumanBytes(traffic.bytes_sent), HumanBytes(traffic.bytes_received),
        HumanBytes(traffic.dense_fp32_bytes));
    if (options_.progress) {
      std::fprintf(stderr, "\r%s\033[K", line.c_str());
    } else if (step % 10 == 0 || step == 1) {
      Log(LogLevel::kInfo, line);
    }
  }

  absl::Status LoadCheckpointIfAny() {
    if (options_.checkpoint_dir.empty()) return absl::OkStatus();
    DEMOD_ASSIGN_OR_RETURN(std::optional<Checkpoint> checkpoint,
                           LoadCheckpoint(options_.checkpoint_dir));
    if (!checkpoint.has_value()) return absl::OkStatus();
    DEMOD_RETURN_IF_ERROR(LoadTensors(checkpoint->parameters, parameters_));
    momentum_ = checkpoint->momentum;
    run_id_ = checkpoint->run_id;
    summary_.last_step = checkpoint->step;
    Log(LogLevel::kInfo, absl::StrCat("resuming from ", options_.checkpoint_dir, ": run ", run_id_,
                                      ", step ", checkpoint->step));
    return absl::OkStatus();
  }

  absl::Status SaveCheckpointIfAny() {
    if (options_.checkpoint_dir.empty() || run_id_.empty()) return absl::OkStatus();
    Checkpoint checkpoint;
    checkpoint.run_id = run_id_;
    checkpoint.step = summary_.last_step;
    checkpoint.parameters = SerializeTensors(parameters_);
    checkpoint.momentum = momentum_;
    return SaveCheckpoint(options_.checkpoint_dir, checkpoint);
  }

  // Exponential backoff with full jitter: reconnecting workers do not arrive in lockstep.
  absl::Duration Backoff(int failures) {
    const absl::Duration cap =
        std::min(options_.backoff_max, options_.backoff_initial * (1 << std::min(failures, 16)));
    std::uniform_real_distribution<double> fraction(0.5, 1.0);
    return cap * fraction(random_);
  }

  Model* const model_;
  Dataset* const dataset_;
  const TrainerOptions options_;
  const std::atomic<bool>* const stop_;
  const std::vector<NamedTensor> parameters_;
  std::ofstream csv_;
  std::string run_id_;
  int64_t total_steps_ = 0;
  std::string momentum_;  // serialized, carried across connections
  TrainingSummary summary_{0, 0, 0, kNaN};
  bool done_ = false;
  bool made_progress_ = false;
  int rank_ = -1;
  int world_ = 0;
  std::mt19937_64 random_{std::random_device{}()};
};

Trainer::Trainer(Model* model, Dataset* dataset, TrainerOptions options)
    : impl_(std::make_unique<Impl>(model, dataset, std::move(options), &stop_)) {}

Trainer::~Trainer() = default;

absl::StatusOr<TrainingSummary> Trainer::Run() { return impl_->Run(); }

}  // namespace demod
