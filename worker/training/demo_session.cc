#include "worker/training/demo_session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/aggregation.h"
#include "common/logging.h"
#include "common/run_settings.h"
#include "common/status_macros.h"
#include "worker/optimizer/dense_adamw.h"
#include "worker/optimizer/parameter_state.h"

namespace demod {
namespace {

v1::DType ProtoDType(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return v1::DTYPE_FLOAT32;
    case at::kBFloat16:
      return v1::DTYPE_BFLOAT16;
    case at::kHalf:
      return v1::DTYPE_FLOAT16;
    case at::kDouble:
      return v1::DTYPE_FLOAT64;
    default:
      return v1::DTYPE_UNSPECIFIED;
  }
}

// The run's optimizer, as the coordinator's settings describe it.
absl::StatusOr<std::unique_ptr<StepOptimizer>> MakeOptimizer(const OptimizerConfig& o,
                                                             std::vector<NamedTensor> parameters,
                                                             Exchange* exchange) {
  if (o.algorithm == OptimizerConfig::Algorithm::kAdamW) {
    AdamWOptions adamw;
    adamw.lr = o.lr.base_lr;
    adamw.beta1 = o.adam_beta1;
    adamw.beta2 = o.adam_beta2;
    adamw.eps = o.adam_eps;
    adamw.weight_decay = o.weight_decay;
    adamw.chunk = o.compression_chunk;
    adamw.encoding = o.value_encoding;
    DEMOD_ASSIGN_OR_RETURN(std::unique_ptr<DenseAdamW> optimizer,
                           DenseAdamW::Create(std::move(parameters), adamw, exchange));
    return std::unique_ptr<StepOptimizer>(std::move(optimizer));
  }
  DEMOD_ASSIGN_OR_RETURN(std::unique_ptr<DemoOptimizer> optimizer,
                         DemoOptimizer::Create(std::move(parameters),
                                               DemoOptions(o.lr.base_lr)
                                                   .compression_decay(o.compression_decay)
                                                   .compression_topk(o.compression_topk)
                                                   .compression_chunk(o.compression_chunk)
                                                   .weight_decay(o.weight_decay)
                                                   .value_encoding(o.value_encoding),
                                               exchange));
  return std::unique_ptr<StepOptimizer>(std::move(optimizer));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DemoSession>> DemoSession::Join(
    SessionOptions options, std::vector<NamedTensor> parameters) {
  std::unique_ptr<DemoSession> session(new DemoSession());
  session->parameters_ = std::move(parameters);
  v1::Join& join = options.client.join;
  join.clear_tensors();
  for (const auto& [name, tensor] : session->parameters_) {
    v1::TensorSpec* spec = join.add_tensors();
    spec->set_name(name);
    for (int64_t d : tensor.sizes()) spec->add_shape(d);
    spec->set_dtype(ProtoDType(tensor.scalar_type()));
  }
  DEMOD_ASSIGN_OR_RETURN(session->client_, CoordinatorClient::Connect(options.client));
  const v1::Welcome& welcome = session->client_->welcome();
  session->total_steps_ = welcome.run().total_steps();
  DEMOD_ASSIGN_OR_RETURN(session->optimizer_config_, OptimizerConfigOf(welcome.run().optimizer()));
  Log(LogLevel::kInfo, absl::StrCat("joined run ", welcome.run().run_id(), " as worker ",
                                    welcome.worker_id(), " after step ", welcome.completed_steps(),
                                    welcome.receives_state() ? "; receiving the parameters" : ""));
  session->exchange_ = std::make_unique<CoordinatorExchange>(
      session->client_.get(), session->parameters_, options.step_timeout, options.stop);
  DEMOD_ASSIGN_OR_RETURN(
      session->optimizer_,
      MakeOptimizer(session->optimizer_config_, session->parameters_, session->exchange_.get()));
  // A joiner receives the optimizer's shared state (AdamW's moments) with the parameters.
  std::vector<NamedTensor> state = session->parameters_;
  for (NamedTensor& t : session->optimizer_->SharedState()) state.push_back(std::move(t));
  session->exchange_->set_state_tensors(std::move(state));
  if (!options.momentum.empty()) {
    DEMOD_RETURN_IF_ERROR(LoadTensors(options.momentum, session->optimizer_->LocalState()));
  }
  DemoSession* s = session.get();
  DEMOD_RETURN_IF_ERROR(s->exchange_
                            ->ReceiveParameters(welcome.receives_state(), *s->optimizer_,
                                                [s](int64_t step) {
                                                  return LearningRateAt(s->optimizer_config_.lr,
                                                                        step, s->total_steps_);
                                                })
                            .status());
  s->finished_ = s->next_step() > s->total_steps_;
  return session;
}

DemoSession::~DemoSession() {
  if (client_ != nullptr) client_->Close();
}

absl::Status DemoSession::Step(uint64_t samples) {
  if (finished_) return absl::OutOfRangeError("the run has finished");
  if (samples > kMaxContributionSamples) {
    return absl::InvalidArgumentError(absl::StrCat("a step of ", samples, " samples; at most ",
                                                   kMaxContributionSamples, " can be said"));
  }
  exchange_->set_step_samples(static_cast<uint32_t>(samples));
  const int64_t step = next_step();
  optimizer_->set_lr(LearningRateAt(optimizer_config_.lr, step, total_steps_));
  absl::Status stepped = optimizer_->Step();
  optimizer_->ZeroGrad();
  if (!stepped.ok()) {
    finished_ = exchange_->finished();
    return finished_ ? absl::OkStatus() : stepped;
  }
  finished_ = step >= total_steps_;
  DEMOD_RETURN_IF_ERROR(SendFingerprintIfDue(step));
  if (exchange_->resync_requested() && !finished_) {
    const auto lr_at = [this](int64_t s) {
      return LearningRateAt(optimizer_config_.lr, s, total_steps_);
    };
    absl::Status resynced = exchange_->ReceiveParameters(true, *optimizer_, lr_at).status();
    if (!resynced.ok() && exchange_->finished()) {
      finished_ = true;  // the run ended while the parameters were on their way
      return absl::OkStatus();
    }
    return resynced;
  }
  return absl::OkStatus();
}

absl::StatusOr<int> DemoSession::SkipClosedSteps() {
  int skipped = 0;
  while (!finished_) {
    const int64_t step = next_step();
    optimizer_->set_lr(LearningRateAt(optimizer_config_.lr, step, total_steps_));
    DEMOD_ASSIGN_OR_RETURN(const bool closed, exchange_->CatchUpIfClosed(step, *optimizer_));
    if (!closed) break;
    ++skipped;
    finished_ = step >= total_steps_;
    DEMOD_RETURN_IF_ERROR(SendFingerprintIfDue(step));
  }
  if (skipped > 0) {
    Log(LogLevel::kInfo,
        absl::StrCat(skipped == 1 ? "step " : absl::StrCat("steps ", next_step() - skipped, "-"),
                     next_step() - 1,
                     " closed before this worker computed its payload: applied without one"));
  }
  return skipped;
}

absl::Status DemoSession::SendFingerprintIfDue(int64_t step) {
  const int64_t interval = client_->welcome().run().fingerprint_interval();
  // Parameters the coordinator already found diverged are not worth a vote.
  if (interval <= 0 || step % interval != 0 || exchange_->resync_requested()) {
    return absl::OkStatus();
  }
  absl::Status sent = client_->SendFingerprint(step, Fingerprint(parameters_));
  // After the last step the coordinator ends the stream: a lost last vote is no error.
  return finished_ ? absl::OkStatus() : sent;
}

absl::Status DemoSession::Report(double loss, uint64_t tokens, double compute_seconds,
                                 double validation_loss, uint64_t samples) {
  v1::StepReport report;
  report.set_step(optimizer_->step_count());
  report.set_loss(loss);
  report.set_validation_loss(validation_loss);
  report.set_tokens(tokens);
  report.set_compute_seconds(compute_seconds);
  report.set_samples(samples);
  absl::Status sent = client_->SendReport(report);
  // After the last step the coordinator ends the stream: a lost last report is no error.
  return finished_ ? absl::OkStatus() : sent;
}

std::string DemoSession::momentum() const { return SerializeTensors(optimizer_->LocalState()); }

}  // namespace demod
