#include "server/run_coordinator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/aggregation.h"
#include "common/layout_table.h"
#include "common/logging.h"
#include "common/payload_codec.h"
#include "common/run_in_parallel.h"
#include "common/run_settings.h"
#include "common/status_macros.h"
#include "server/tensor_table.h"

namespace demod {
namespace {

// A flush of at least 2 x kChannelsPerFanOutThread channels (a step's aggregate to that many
// members) is spread over up to kMaxFanOutThreads threads.
constexpr size_t kChannelsPerFanOutThread = 4;
constexpr size_t kMaxFanOutThreads = 4;
constexpr size_t kMaxWorkerNameBytes = 128;
// The hardware's name labels demod_worker_info: bounded, and printable so it reads in logs.
constexpr size_t kMaxDeviceNameBytes = 128;

std::shared_ptr<const OutboundMessage> ControlMessage(v1::Control control) {
  v1::CoordinatorMessage message;
  *message.mutable_control() = std::move(control);
  return std::make_shared<const OutboundMessage>(message);
}

v1::Control MakeControl(v1::Control::Kind kind, std::string reason = {}) {
  v1::Control control;
  control.set_kind(kind);
  control.set_reason(std::move(reason));
  return control;
}

EvictionReason EvictionReasonOf(const Action& evict) {
  switch (evict.evict_cause) {
    case Action::EvictCause::kMissedSteps:
      return EvictionReason::kMissedSteps;
    case Action::EvictCause::kSilent:
      return EvictionReason::kHeartbeat;
    case Action::EvictCause::kNoDonor:
      return EvictionReason::kNoDonor;
  }
  return EvictionReason::kMissedSteps;
}

absl::Status CheckWorkerName(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("join: worker_name is empty");
  if (name.size() > kMaxWorkerNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("join: worker_name is longer than ", kMaxWorkerNameBytes, " bytes"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.' && c != ':' && c != '@') {
      return absl::InvalidArgumentError(absl::StrCat(
          "join: worker_name '", absl::CHexEscape(name),
          "' may hold only letters, digits and - _ . : @ (it names metrics and logs)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckHardware(const v1::Hardware& hardware) {
  if (!v1::DeviceKind_IsValid(hardware.device_kind())) {
    return absl::InvalidArgumentError(
        absl::StrCat("join: hardware.device_kind ", hardware.device_kind(), " is not one of ",
                     "DEVICE_KIND_UNSPECIFIED, DEVICE_KIND_CPU, DEVICE_KIND_CUDA"));
  }
  const std::string& name = hardware.device_name();
  if (name.size() > kMaxDeviceNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("join: hardware.device_name is longer than ", kMaxDeviceNameBytes, " bytes"));
  }
  for (char c : name) {
    if (!absl::ascii_isprint(c)) {
      return absl::InvalidArgumentError(absl::StrCat("join: hardware.device_name '",
                                                     absl::CHexEscape(name),
                                                     "' may hold only printable ASCII"));
    }
  }
  return absl::OkStatus();
}

// demod_worker_info's device_kind label.
const char* DeviceKindLabel(v1::DeviceKind kind) {
  switch (kind) {
    case v1::DEVICE_KIND_CPU:
      return "cpu";
    case v1::DEVICE_KIND_CUDA:
      return "cuda";
    default:
      return "unspecified";
  }
}

// Upper bounds on what one message may hold, so a frame announcing more is refused before
// any memory is spent on it.
uint64_t MaxPayloadBytes(const LayoutTable& table) {
  uint64_t bytes = 256;
  for (const NamedLayout& t : table) {
    bytes += 64 + static_cast<uint64_t>(t.layout.num_selected()) * 8 +
             static_cast<uint64_t>(t.layout.num_chunks()) * 8;
  }
  return bytes;
}

// A joiner's state: the parameters and what the optimizer shares (AdamW's two moments), each
// element at most 8 bytes, plus names and headers.
constexpr uint64_t kMaxStateBytesPerElement = 4 * 8;

uint64_t MaxStateBytes(const LayoutTable& table) {
  return static_cast<uint64_t>(TotalElements(table)) * kMaxStateBytesPerElement + (1 << 20);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RunCoordinator>> RunCoordinator::Create(Options options) {
  if (options.metrics == nullptr) return absl::InvalidArgumentError("metrics are required");
  DEMOD_RETURN_IF_ERROR(options.config.Validate());
  std::optional<PersistedRun> saved;
  if (options.store.has_value()) {
    DEMOD_ASSIGN_OR_RETURN(saved, options.store->Load());
  }
  int64_t completed = 0;
  if (saved.has_value()) {
    if (!options.config.run_id.empty() && options.config.run_id != saved->config.run_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state directory ", options.store->dir(), " holds run '", saved->config.run_id,
          "', not '", options.config.run_id, "': use its run id or another state directory"));
    }
    options.config = saved->config;
    completed = saved->completed_steps;
  }
  auto coordinator = std::unique_ptr<RunCoordinator>(
      new RunCoordinator(std::move(options), completed, saved.has_value()));
  absl::MutexLock lock(&coordinator->mu_);
  if (saved.has_value()) {
    coordinator->persisted_ = *std::move(saved);
    if (!coordinator->persisted_.tensors.empty()) {
      std::vector<TensorShape> shapes;
      for (const v1::TensorSpec& spec : coordinator->persisted_.tensors) {
        shapes.push_back({spec.name(), {spec.shape().begin(), spec.shape().end()}});
      }
      DEMOD_ASSIGN_OR_RETURN(LayoutTable layouts,
                             MakeRunLayoutTable(shapes, coordinator->config_.optimizer));
      coordinator->layouts_ = std::make_shared<const LayoutTable>(std::move(layouts));
      coordinator->max_payload_bytes_ = MaxPayloadBytes(*coordinator->layouts_);
      coordinator->max_state_bytes_ = MaxStateBytes(*coordinator->layouts_);
    }
    Log(LogLevel::kInfo, absl::StrCat("resuming run ", coordinator->config_.run_id, " after step ",
                                      completed, " from ", coordinator->saver_->store().dir()));
  } else {
    coordinator->persisted_.config = coordinator->config_;
    coordinator->Save();
  }
  coordinator->metrics_->SetRunLimits(coordinator->config_.total_steps,
                                      coordinator->config_.min_workers);
  coordinator->metrics_->SetCurrentStep(completed);
  return coordinator;
}

RunCoordinator::RunCoordinator(Options options, int64_t completed_steps, bool resumed)
    : config_(options.config),
      metrics_(options.metrics),
      machine_(config_, completed_steps, resumed),
      relay_(config_.max_frame_bytes) {
  if (config_.batch.balance) {
    BalancerOptions balancer;
    balancer.global_batch = config_.batch.global;
    balancer_.emplace(balancer);
  }
  if (options.store.has_value()) {
    saver_ = std::make_unique<RunStateSaver>(
        *std::move(options.store), [metrics = metrics_](const absl::Status& s) {
          // Training goes on (a full or failing disk should not stop it); a restart would
          // resume from the last state that was saved. Operators see it in the log and in
          // demod_state_save_failures_total.
          metrics->StateSaveFailed();
          Log(LogLevel::kError, absl::StrCat("could not save the run state: ", s.ToString()));
        });
  }
}

absl::Status RunCoordinator::AdoptTensorTable(const v1::Join& join) {
  DEMOD_ASSIGN_OR_RETURN(std::vector<TensorShape> shapes, ValidateTensorSpecs(join.tensors()));
  if (!persisted_.tensors.empty()) {
    TensorSpecs run;
    for (const v1::TensorSpec& spec : persisted_.tensors) *run.Add() = spec;
    return CheckSameTensorSpecs(run, join.tensors());
  }
  DEMOD_ASSIGN_OR_RETURN(LayoutTable layouts, MakeRunLayoutTable(shapes, config_.optimizer));
  layouts_ = std::make_shared<const LayoutTable>(std::move(layouts));
  max_payload_bytes_ = MaxPayloadBytes(*layouts_);
  max_state_bytes_ = MaxStateBytes(*layouts_);
  persisted_.tensors.assign(join.tensors().begin(), join.tensors().end());
  Log(LogLevel::kInfo, absl::StrCat("run ", config_.run_id, " takes the tensor table of worker '",
                                    join.worker_name(), "': ", layouts_->size(), " tensors, ",
                                    TotalElements(*layouts_), " parameters"));
  return absl::OkStatus();
}

absl::StatusOr<WorkerId> RunCoordinator::Join(const v1::Join& join,
                                              std::shared_ptr<MemberChannel> channel,
                                              absl::Time now) {
  absl::StatusOr<WorkerId> id = Admit(join, std::move(channel), now);
  FlushChannels();
  return id;
}

absl::StatusOr<WorkerId> RunCoordinator::Admit(const v1::Join& join,
                                               std::shared_ptr<MemberChannel> channel,
                                               absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("the coordinator is shutting down");
  if (join.protocol_version() != v1::PROTOCOL_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat("join: protocol version ", join.protocol_version(), " is not supported",
                     " (this coordinator speaks ", v1::PROTOCOL_VERSION, ")"));
  }
  DEMOD_RETURN_IF_ERROR(CheckWorkerName(join.worker_name()));
  DEMOD_RETURN_IF_ERROR(CheckHardware(join.hardware()));
  if (!join.run_id().empty() && join.run_id() != config_.run_id) {
    return absl::FailedPreconditionError(absl::StrCat("join: the worker belongs to run '",
                                                      join.run_id(), "', this coordinator runs '",
                                                      config_.run_id, "'"));
  }
  if (machine_.finished()) {
    return absl::OutOfRangeError(
        absl::StrCat("run ", config_.run_id, " has finished all ", config_.total_steps, " steps"));
  }
  const bool adopting = persisted_.tensors.empty();
  DEMOD_RETURN_IF_ERROR(AdoptTensorTable(join));
  const int64_t saved_steps = machine_.completed_steps();
  absl::StatusOr<StepMachine::Joined> joined =
      machine_.Join(join.worker_name(), now, join.resume_step());
  if (machine_.completed_steps() != saved_steps) {
    Log(LogLevel::kWarning,
        absl::StrCat("worker '", join.worker_name(), "' holds the parameters of step ",
                     join.resume_step(), ", the saved state those of step ", saved_steps,
                     ": the coordinator stopped between a step's save and its delivery; the run "
                     "goes on after step ",
                     machine_.completed_steps()));
    metrics_->SetCurrentStep(machine_.completed_steps());
    Save();
  }
  if (!joined.ok()) {
    if (adopting) {  // the table is the run's only once its worker is a member
      persisted_.tensors.clear();
      layouts_.reset();
    }
    return joined.status();
  }
  const WorkerId id = joined->id;
  Member& member = members_
                       .emplace(std::piecewise_construct, std::forward_as_tuple(id),
                                std::forward_as_tuple(Member{
                                    join.worker_name(), join.hardware(), std::move(channel),
                                    FrameAssembler(max_payload_bytes_, config_.max_frame_bytes)}))
                       .first->second;
  if (balancer_.has_value()) {
    // 0: no limit of the worker's own.
    const uint64_t global = static_cast<uint64_t>(config_.batch.global);
    const uint64_t most = join.max_batch_samples() == 0 ? global : join.max_batch_samples();
    balancer_->SetLimits(id, 1, static_cast<int64_t>(std::min(most, global)));
  }
  bool receives_state = false;
  for (const Action& a : joined->actions) {
    receives_state |= a.kind == Action::Kind::kRequestState && a.worker == id;
  }
  v1::CoordinatorMessage welcome;
  welcome.mutable_welcome()->set_worker_id(id);
  *welcome.mutable_welcome()->mutable_run() = RunSettingsOf(config_);
  welcome.mutable_welcome()->set_completed_steps(machine_.completed_steps());
  welcome.mutable_welcome()->set_receives_state(receives_state);
  SendTo(id, std::make_shared<const OutboundMessage>(welcome));
  metrics_->WorkerJoined(member.name, DeviceKindLabel(join.hardware().device_kind()),
                         join.hardware().device_name());
  member.bytes_received = join.ByteSizeLong();
  metrics_->BytesReceived(member.name, member.bytes_received);
  Record(member.name, "join",
         absl::StrCat("id ", id, ", ", join.hardware().device_name(),
                      join.resume_step() > 0
                          ? absl::StrCat(", resumes after step ", join.resume_step())
                          : std::string()),
         now);
  Log(LogLevel::kInfo,
      absl::StrCat("worker ", id, " '", member.name, "' joined (", join.hardware().device_name(),
                   receives_state ? "), receives the parameters" : "), holds the parameters"));
  if (!receives_state && join.resume_step() < machine_.completed_steps()) {
    // No more current worker came back within the stale seed grace: the run goes on from this
    // one's parameters.
    const int64_t undone = machine_.completed_steps() - join.resume_step();
    metrics_->SeedRolledBack(undone);
    Log(LogLevel::kWarning,
        absl::StrCat("the run's parameters are now worker '", member.name, "''s, from step ",
                     join.resume_step(), "; the run had completed step ",
                     machine_.completed_steps(), ": ", undone, " steps of training undone"));
  }
  if (adopting) Save();
  Apply(std::move(joined->actions), now);
  return id;
}

void RunCoordinator::Handle(WorkerId worker, v1::WorkerMessage message, absl::Time now) {
  CompletePayload complete;
  {
    absl::MutexLock lock(&mu_);
    // Already expelled (its last messages are moot), or shutting down: nothing may close a
    // step whose aggregate could no longer be delivered.
    if (shut_down_ || members_.count(worker) == 0) return;
    absl::Status status = HandleLocked(worker, message, now, &complete);
    if (!status.ok()) {
      Expel(worker, status, LeaveReason::kInvalidMessage, now);
      complete.bytes.clear();
    }
  }
  if (!complete.bytes.empty()) {
    // Checksum and validation, the bulk of a payload's cost, run outside the lock: payloads of
    // different workers decode in parallel, each on its stream's thread (not spread further:
    // the aggregation's helpers are the ones on the step's critical path). A stream's messages
    // are handled one at a time, and the layout table never changes once set, so nothing here
    // can go stale.
    absl::StatusOr<StepPayload> payload =
        DecodeStepPayload(complete.bytes, *complete.layouts, CallingThread());
    absl::MutexLock lock(&mu_);
    if (!shut_down_ && members_.count(worker) > 0) {
      const int64_t completed_before = machine_.completed_steps();
      absl::Status status;
      if (!payload.ok()) {
        status = absl::Status(
            payload.status().code(),
            absl::StrCat("payload of step ", complete.step, ": ", payload.status().message()));
      } else if (payload->step != complete.step) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "payload frames of step ", complete.step, " carry a payload of step ", payload->step));
      } else if (payload->encoding != config_.optimizer.value_encoding) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "payload of step ", complete.step, ": values in ", ValueEncodingName(payload->encoding),
            ", the run's are ", ValueEncodingName(config_.optimizer.value_encoding)));
      } else {
        status =
            OnPayload(worker, *std::move(payload), complete.bytes.size(), complete.samples, now);
      }
      if (!status.ok()) Expel(worker, status, LeaveReason::kInvalidMessage, now);
      // A payload that closed the step queued its aggregate to every member.
      if (machine_.completed_steps() != completed_before) EvictSlowConsumers(now);
    }
  }
  FlushChannels();
}

void RunCoordinator::HandleStateFrame(WorkerId donor, const StateFrameHeader& header,
                                      std::shared_ptr<const OutboundMessage> relay,
                                      absl::Time now) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || members_.count(donor) == 0) return;
    absl::Status status = Received(donor, relay->size(), now);
    if (status.ok()) status = OnStateFrame(donor, header, std::move(relay), now);
    if (!status.ok()) Expel(donor, status, LeaveReason::kInvalidMessage, now);
  }
  FlushChannels();
}

absl::Status RunCoordinator::Received(WorkerId worker, uint64_t bytes, absl::Time now) {
  Member& member = members_.at(worker);
  member.bytes_received += bytes;
  metrics_->BytesReceived(member.name, bytes);
  return machine_.Heartbeat(worker, now).status();
}

absl::Status RunCoordinator::HandleLocked(WorkerId worker, v1::WorkerMessage& message,
                                          absl::Time now, CompletePayload* complete) {
  DEMOD_RETURN_IF_ERROR(Received(worker, message.ByteSizeLong(), now));
  switch (message.kind_case()) {
    case v1::WorkerMessage::kPayload:
      return OnPayloadFrame(worker, *message.mutable_payload(), complete);
    case v1::WorkerMessage::kState: {
      v1::StateFrame& frame = *message.mutable_state();
      const StateFrameHeader header{frame.joiner_id(), frame.step(), frame.total_bytes(),
                                    frame.offset(), frame.data().size()};
      v1::CoordinatorMessage relay;
      *relay.mutable_state() = std::move(frame);
      return OnStateFrame(worker, header, std::make_shared<const OutboundMessage>(relay), now);
    }
    case v1::WorkerMessage::kFingerprint:
      return OnFingerprint(worker, message.fingerprint(), now);
    case v1::WorkerMessage::kReport: {
      const v1::StepReport& r = message.report();
      if (!std::isfinite(r.compute_seconds()) || r.compute_seconds() < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("report: compute_seconds ", r.compute_seconds(), " is not >= 0"));
      }
      // A non-finite loss is the worker's news to report (it diverged), not a protocol error.
      Member& member = members_.at(worker);
      metrics_->Report(member.name, r.loss(), r.validation_loss(), r.tokens(), r.compute_seconds());
      if (r.samples() > 0 && r.compute_seconds() > 0) {
        const double samples_per_second = static_cast<double>(r.samples()) / r.compute_seconds();
        metrics_->Throughput(member.name, samples_per_second);
        if (balancer_.has_value()) {
          balancer_->Observe(worker,
                             static_cast<int64_t>(std::min<uint64_t>(r.samples(), INT64_MAX)),
                             r.compute_seconds());
        }
      }
      // The run is over and so is this worker's news.
      if (r.step() >= machine_.completed_steps()) EndFinishedStream(member);
      return absl::OkStatus();
    }
    case v1::WorkerMessage::kHeartbeat:
      return absl::OkStatus();
    case v1::WorkerMessage::kJoin:
      return absl::InvalidArgumentError("a second join on the same stream");
    case v1::WorkerMessage::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("a message of no known kind (newer protocol?)");
}

absl::Status RunCoordinator::OnPayloadFrame(WorkerId worker, v1::PayloadFrame& frame,
                                            CompletePayload* complete) {
  if (frame.step() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload frame for step ", frame.step(), ": steps start at 1"));
  }
  if (frame.samples() > kMaxContributionSamples) {
    return absl::InvalidArgumentError(absl::StrCat("payload of step ", frame.step(), " says ",
                                                   frame.samples(), " samples, more than ",
                                                   kMaxContributionSamples));
  }
  Member& member = members_.at(worker);
  if (frame.offset() == 0) {
    member.payload_samples = frame.samples();
  } else if (frame.samples() != member.payload_samples) {
    return absl::InvalidArgumentError(absl::StrCat("payload frames of step ", frame.step(), " say ",
                                                   member.payload_samples, " and ", frame.samples(),
                                                   " samples"));
  }
  DEMOD_ASSIGN_OR_RETURN(
      std::optional<std::string> bytes,
      member.payload_frames.AddOwned(frame.step(), frame.total_bytes(), frame.offset(),
                                     std::move(*frame.mutable_data())));
  if (!bytes.has_value()) return absl::OkStatus();
  if (bytes->empty()) {
    return absl::InvalidArgumentError(absl::StrCat("payload of step ", frame.step(), " is empty"));
  }
  if (config_.batch.weighting == Weighting::kSamples && member.payload_samples == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload of step ", frame.step(),
                     " does not say its samples; the run weighs contributions by samples"));
  }
  complete->step = frame.step();
  complete->samples = member.payload_samples;
  complete->bytes = *std::move(bytes);
  complete->layouts = layouts_;
  return absl::OkStatus();
}

absl::Status RunCoordinator::OnPayload(WorkerId worker, StepPayload payload, uint64_t bytes,
                                       uint32_t samples, absl::Time now) {
  const int64_t step = payload.step;
  metrics_->PayloadReceived(members_.at(worker).name, bytes);
  if (!machine_.open_step().has_value() && step == machine_.completed_steps() + 1) {
    // Paused: the payload is still valid when the step opens (the parameters do not move).
    early_payloads_[worker] = TakenPayload{std::move(payload), bytes, samples};
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Action>> actions = machine_.Payload(worker, step, now);
  if (absl::IsFailedPrecondition(actions.status())) {
    // Not a contributor of this step (it became active later): keep it in momentum.
    v1::Control control =
        MakeControl(v1::Control::KIND_NOT_INCLUDED, std::string(actions.status().message()));
    control.add_steps(step);
    SendControl(worker, std::move(control));
    metrics_->ContributionLate(members_.at(worker).name);
    return absl::OkStatus();
  }
  if (!actions.ok()) return actions.status();
  const bool accepted = std::none_of(actions->begin(), actions->end(), [&](const Action& a) {
    return a.kind == Action::Kind::kRejectLate && a.worker == worker;
  });
  if (accepted) {
    payloads_[worker] = TakenPayload{std::move(payload), bytes, samples};
    if (step_.has_value()) step_->PayloadTaken(now);
  }
  Apply(*std::move(actions), now);
  return absl::OkStatus();
}

absl::Status RunCoordinator::OnStateFrame(WorkerId donor, const StateFrameHeader& frame,
                                          std::shared_ptr<const OutboundMessage> relay,
                                          absl::Time now) {
  DEMOD_ASSIGN_OR_RETURN(ParameterRelay::Judged judged,
                         relay_.Judge(donor, frame, max_state_bytes_, machine_.completed_steps()));
  if (judged.verdict == ParameterRelay::Verdict::kDrop) return absl::OkStatus();
  const WorkerId joiner = frame.joiner_id;
  machine_.StateProgress(joiner, now);
  SendTo(joiner, std::move(relay));
  if (judged.verdict != ParameterRelay::Verdict::kRelayLast) {
    RequestMoreState(joiner);
    return absl::OkStatus();
  }
  metrics_->StateTransfer(judged.total_bytes);
  Log(LogLevel::kInfo,
      absl::StrCat("worker ", joiner, " is sent ", judged.total_bytes,
                   " bytes of parameters (step ", judged.step, ") from worker ", donor));
  // The joiner holds them once its stream has written the last frame, not when it is queued:
  // on a slow link it could not reach the steps it would be expected at meanwhile.
  MemberChannel& channel = *members_.at(joiner).channel;
  if (channel.NotifyWhenDelivered([this, joiner] { JoinerHoldsParameters(joiner); })) {
    awaiting_delivery_[joiner] = channel.queued_bytes();
    return absl::OkStatus();
  }
  DEMOD_ASSIGN_OR_RETURN(std::vector<Action> actions, machine_.StateTransferred(joiner, now));
  Apply(std::move(actions), now);
  return absl::OkStatus();
}

void RunCoordinator::JoinerHoldsParameters(WorkerId joiner) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || awaiting_delivery_.erase(joiner) == 0) return;
    const absl::Time now = absl::Now();
    absl::StatusOr<std::vector<Action>> actions = machine_.StateTransferred(joiner, now);
    if (actions.ok()) {
      Log(LogLevel::kInfo, absl::StrCat("worker ", joiner, " holds the parameters"));
      Apply(*std::move(actions), now);
    } else {
      // Moot: the joiner was given another donor, or was resynced, meanwhile.
      Log(LogLevel::kDebug, absl::StrCat("worker ", joiner, "'s parameters arrived, moot: ",
                                         actions.status().message()));
    }
  }
  FlushChannels();
}

absl::Status RunCoordinator::OnFingerprint(WorkerId worker, const v1::Fingerprint& fingerprint,
                                           absl::Time now) {
  if (fingerprint.step() < 1 || fingerprint.step() > machine_.completed_steps()) {
    return absl::InvalidArgumentError(absl::StrCat("fingerprint for step ", fingerprint.step(),
                                                   ", which has not closed (",
                                                   machine_.completed_steps(), " closed)"));
  }
  const std::optional<FingerprintVerdict> verdict =
      fingerprints_.Report(worker, fingerprint.step(), fingerprint.hash());
  if (!verdict.has_value()) return absl::OkStatus();
  for (WorkerId divergent : verdict->divergent) {
    const std::string& name = members_.at(divergent).name;
    metrics_->FingerprintMismatch(name);
    absl::StatusOr<std::vector<Action>> actions =
        machine_.Resync(divergent, verdict->divergent, now);
    Log(LogLevel::kWarning,
        absl::StrCat("worker ", divergent, " '", name, "' diverged at step ", fingerprint.step(),
                     " (", verdict->agreeing.size(), " of ",
                     verdict->agreeing.size() + verdict->divergent.size(),
                     " agree): ", actions.ok() ? "resyncing" : actions.status().message()));
    if (!actions.ok()) continue;
    fingerprints_.Deactivated(divergent);
    SendControl(divergent,
                MakeControl(v1::Control::KIND_RESYNC,
                            absl::StrCat("parameters differ from the majority's after step ",
                                         fingerprint.step())));
    Apply(*std::move(actions), now);
  }
  return absl::OkStatus();
}

void RunCoordinator::Apply(std::vector<Action> initial, absl::Time now) {
  std::deque<Action> pending(std::make_move_iterator(initial.begin()),
                             std::make_move_iterator(initial.end()));
  while (!pending.empty()) {
    Action action = std::move(pending.front());
    pending.pop_front();
    Log(LogLevel::kDebug, ActionToString(action));
    std::vector<Action> more;
    switch (action.kind) {
      case Action::Kind::kWelcome: {
        // Active now: any transfer is over (or moot: a joiner left without a donor becomes
        // the seed), and its fingerprints count from this step on.
        EndTransfer(action.worker);
        fingerprints_.Activated(action.worker, action.step);
        SendBatchShares();  // its share, and the others' new ones, first
        v1::Control control = MakeControl(v1::Control::KIND_ACTIVE, action.reason);
        control.add_steps(action.step);
        SendControl(action.worker, std::move(control));
        break;
      }
      case Action::Kind::kRequestState:
        RequestState(action);
        break;
      case Action::Kind::kOpenStep:
        OpenStep(action, now, more);
        break;
      case Action::Kind::kCloseStep:
        CloseStep(action, now);
        break;
      case Action::Kind::kRejectLate: {
        v1::Control control = MakeControl(v1::Control::KIND_NOT_INCLUDED, action.reason);
        control.add_steps(action.step);
        SendControl(action.worker, std::move(control));
        if (members_.count(action.worker) > 0) {
          metrics_->ContributionLate(members_.at(action.worker).name);
        }
        break;
      }
      case Action::Kind::kEvict: {
        if (members_.count(action.worker) == 0) break;
        SendControl(action.worker, MakeControl(v1::Control::KIND_EVICTED, action.reason));
        metrics_->WorkerEvicted(members_.at(action.worker).name, EvictionReasonOf(action));
        Log(LogLevel::kWarning,
            absl::StrCat("worker ", action.worker, " '", members_.at(action.worker).name,
                         "' evicted: ", action.reason));
        EndStream(members_.at(action.worker),
                  absl::AbortedError(absl::StrCat("evicted: ", action.reason)));
        Forget(action.worker, "evict", action.reason, now);
        break;
      }
      case Action::Kind::kPause:
        metrics_->SetPaused(true);
        Log(LogLevel::kInfo,
            absl::StrCat("run paused before step ", action.step, ": ", action.reason));
        Broadcast(MakeControl(v1::Control::KIND_PAUSED, action.reason));
        break;
      case Action::Kind::kFinish:
        Log(LogLevel::kInfo, absl::StrCat("run ", config_.run_id, " finished: ", action.reason));
        Broadcast(MakeControl(v1::Control::KIND_FINISHED, action.reason));
        // The streams stay open for the last step's reports (see drained()).
        for (auto& [id, member] : members_) member.end_by = now + kFinishGrace;
        break;
    }
    pending.insert(pending.end(), std::make_move_iterator(more.begin()),
                   std::make_move_iterator(more.end()));
  }
  metrics_->SetActiveWorkers(machine_.active_count());
}

void RunCoordinator::RequestState(const Action& request) {
  fingerprints_.Deactivated(request.worker);  // its parameters are about to be replaced
  for (const ParameterRelay::Request& r : relay_.Start(request.worker, request.donor)) {
    SendStateRequest(r, r.length == 0 ? "" : request.reason);
  }
  Log(LogLevel::kInfo, request.reason);
}

void RunCoordinator::SendStateRequest(const ParameterRelay::Request& request,
                                      const std::string& reason) {
  v1::Control control = MakeControl(v1::Control::KIND_SEND_STATE, reason);
  control.set_joiner_id(request.joiner);
  control.set_state_offset(request.offset);
  control.set_state_length(request.length);
  SendControl(request.donor, std::move(control));
}

void RunCoordinator::RequestMoreState(WorkerId joiner) {
  auto it = members_.find(joiner);
  const std::optional<uint64_t> room = relay_.QueueRoom(joiner);
  if (it == members_.end() || !room.has_value()) return;
  // Past the room, the joiner's stream says when it has drained enough.
  MemberChannel& channel = *it->second.channel;
  if (channel.NotifyWhenQueuedAtMost(*room, [this, joiner] { JoinerDrained(joiner); })) return;
  if (std::optional<ParameterRelay::Request> next = relay_.Next(joiner, channel.queued_bytes());
      next.has_value()) {
    SendStateRequest(*next, "");
  }
}

void RunCoordinator::JoinerDrained(WorkerId joiner) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    RequestMoreState(joiner);
  }
  FlushChannels();
}

void RunCoordinator::EndTransfer(WorkerId joiner) {
  if (std::optional<ParameterRelay::Request> end = relay_.End(joiner); end.has_value()) {
    SendStateRequest(*end, "");
  }
}

std::vector<WorkerId> RunCoordinator::ActiveMembers() const {
  std::vector<WorkerId> active;
  const std::vector<MemberView> members = machine_.members();
  for (const MemberView& m : members) {
    if (m.active && members_.count(m.id) > 0) active.push_back(m.id);
  }
  return active;
}

void RunCoordinator::SendBatchShares() {
  if (!balancer_.has_value()) return;
  for (const auto& [id, share] : balancer_->Shares(ActiveMembers())) {
    Member& member = members_.at(id);
    if (share == member.batch_share_sent) continue;
    member.batch_share_sent = share;
    metrics_->BatchShare(member.name, share);
    v1::Control control =
        MakeControl(v1::Control::KIND_BATCH_SHARE,
                    absl::StrCat(share, " of the ", config_.batch.global, " samples of each step"));
    control.set_batch_samples(static_cast<uint64_t>(share));
    SendControl(id, std::move(control));
  }
}

void RunCoordinator::OpenStep(const Action& open, absl::Time now, std::vector<Action>& more) {
  if (machine_.paused() == false) metrics_->SetPaused(false);
  SendBatchShares();  // usually sent already (CloseStep, kWelcome): then nothing
  step_.emplace(open.step, now, open.workers);
  payloads_.clear();
  // Payloads that waited out a pause count now, if their senders are expected.
  std::map<WorkerId, TakenPayload> early = std::move(early_payloads_);
  early_payloads_.clear();
  for (auto& [worker, taken] : early) {
    if (taken.payload.step != open.step || members_.count(worker) == 0) continue;
    absl::StatusOr<std::vector<Action>> actions = machine_.Payload(worker, open.step, now);
    if (!actions.ok()) continue;  // not expected: it rejoined or was not active
    payloads_[worker] = std::move(taken);
    step_->PayloadTaken(now);
    more.insert(more.end(), actions->begin(), actions->end());
  }
}

void RunCoordinator::CloseStep(const Action& close, absl::Time now) {
  std::vector<Contribution> contributions;
  uint64_t bytes_in = 0;
  for (WorkerId id : close.workers) {
    const TakenPayload& taken = payloads_.at(id);
    contributions.push_back({id, &taken.payload, taken.samples});
    bytes_in += taken.bytes;
  }
  absl::StatusOr<std::string> encoded =
      AggregateStepEncoded(contributions, *layouts_, config_.batch.weighting);
  if (!encoded.ok()) {
    // Decoded payloads were validated against the table, so this is a coordinator bug.
    Log(LogLevel::kError, absl::StrCat("step ", close.step,
                                       " could not be aggregated: ", encoded.status().ToString()));
    ShutdownLocked(now);
    return;
  }
  payloads_.clear();
  // The aggregate leaves once every earlier state is on disk, while this step's own save goes
  // on beside the next step: the saved state is never more than one step from the workers',
  // and a restarted coordinator takes the seed's step (StepMachine::Join). The wait holds the
  // lock, but the save it waits for began a whole step ago (it is a wait only when a step
  // takes less time than a save).
  if (saver_ != nullptr) saver_->WaitForSaves();
  Save();
  const StepRecord record = step_.has_value() ? *std::move(step_) : StepRecord(close.step, now, {});
  step_.reset();
  const std::optional<absl::Time> last_payload = record.last_payload();
  const uint64_t bytes_out = encoded->size() * members_.size();
  largest_aggregate_bytes_ = std::max<uint64_t>(largest_aggregate_bytes_, encoded->size());
  for (const auto& [id, member] : members_) metrics_->AggregateSent(member.name, encoded->size());
  // The next step's shares go ahead of this step's aggregate: a worker has its share before it
  // starts computing the next step.
  SendBatchShares();
  SendToAll(OutboundMessage::AggregateFrames(
      close.step, *std::move(encoded), config_.max_frame_bytes,
      last_payload.has_value() ? absl::ToUnixMicros(*last_payload) : 0));
  RecordClosedStep(record.Close(now, close.workers, bytes_in, bytes_out, close.reason));
}

void RunCoordinator::RecordClosedStep(const StepSummary& summary) {
  for (WorkerId id : summary.missing) {
    if (auto it = members_.find(id); it != members_.end()) {
      metrics_->ContributionMissed(it->second.name);
    }
  }
  metrics_->StepClosed(
      absl::ToDoubleSeconds(summary.duration), absl::ToDoubleSeconds(summary.barrier_wait),
      static_cast<int>(summary.contributors.size()), static_cast<int>(summary.expected),
      static_cast<uint64_t>(TotalElements(*layouts_)) * 4 * summary.contributors.size());
  metrics_->SetCurrentStep(summary.step);
  metrics_->SetLearningRate(
      LearningRateAt(config_.optimizer.lr, summary.step, config_.total_steps));
  Log(LogLevel::kInfo, summary.LogLine());
}

void RunCoordinator::Expel(WorkerId worker, const absl::Status& status, LeaveReason metric_reason,
                           absl::Time now) {
  auto it = members_.find(worker);
  if (it == members_.end()) return;
  Log(LogLevel::kWarning,
      absl::StrCat("worker ", worker, " '", it->second.name, "' removed: ", status.ToString()));
  if (metric_reason == LeaveReason::kSlowConsumer) {
    it->second.channel->Abort(status);
    unflushed_.push_back(it->second.channel);
  } else {
    EndStream(it->second, status);
  }
  metrics_->WorkerLeft(it->second.name, metric_reason);
  const std::string reason(status.message());
  Forget(worker, "leave", reason, now);
  Apply(machine_.Leave(worker, now, reason), now);
}

uint64_t RunCoordinator::OutboundQueueBound() const {
  // Framing and control messages: a few kB per step at most.
  constexpr uint64_t kPerStepOverhead = 4096;
  return relay_.max_outstanding_bytes() + static_cast<uint64_t>(config_.outbound_queue_steps) *
                                              (largest_aggregate_bytes_ + kPerStepOverhead);
}

void RunCoordinator::EvictSlowConsumers(absl::Time now) {
  const uint64_t bound = OutboundQueueBound();
  std::vector<std::pair<WorkerId, uint64_t>> slow;
  for (const auto& [id, member] : members_) {
    const uint64_t queued = member.channel->queued_bytes();
    if (queued > bound) slow.emplace_back(id, queued);
  }
  for (const auto& [id, queued] : slow) {
    Expel(id,
          absl::ResourceExhaustedError(absl::StrCat(
              "slow consumer: ", queued, " bytes wait unread for this worker, more than ", bound,
              " (two windows of parameters and outbound_queue_steps = ",
              config_.outbound_queue_steps, " steps of aggregates); rejoin when reading again")),
          LeaveReason::kSlowConsumer, now);
  }
}

// Drops what the coordinator keeps for a member the machine no longer has (or is about to
// lose: Expel tells the machine after).
void RunCoordinator::Forget(WorkerId worker, const std::string& event, const std::string& reason,
                            absl::Time now) {
  auto it = members_.find(worker);
  if (it == members_.end()) return;
  metrics_->RemoveWorker(it->second.name);
  Record(it->second.name, event, reason, now);
  members_.erase(it);
  EndTransfer(worker);
  awaiting_delivery_.erase(worker);
  early_payloads_.erase(worker);
  fingerprints_.Deactivated(worker);
  if (balancer_.has_value()) balancer_->Remove(worker);
}

void RunCoordinator::Malformed(WorkerId worker, const absl::Status& status, absl::Time now) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || members_.count(worker) == 0) return;
    Expel(worker, status, LeaveReason::kInvalidMessage, now);
  }
  FlushChannels();
}

void RunCoordinator::Disconnected(WorkerId worker, absl::Time now) {
  {
    absl::MutexLock lock(&mu_);
    auto it = members_.find(worker);
    if (shut_down_ || it == members_.end()) return;
    // After the last step every stream ends: that is the run's end, not a lost worker.
    const bool finished = machine_.finished();
    const char* reason = finished ? "finished" : "disconnected";
    Log(LogLevel::kInfo, absl::StrCat("worker ", worker, " '", it->second.name, "' ", reason));
    metrics_->WorkerLeft(it->second.name,
                         finished ? LeaveReason::kFinished : LeaveReason::kDisconnected);
    Forget(worker, "leave", reason, now);
    Apply(machine_.Leave(worker, now, reason), now);
  }
  FlushChannels();
}

void RunCoordinator::Tick(absl::Time now) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    Apply(machine_.Tick(now), now);
    EvictSlowConsumers(now);
    // A joiner still reading its last frames is making progress while its queue shrinks.
    for (auto& [joiner, queued] : awaiting_delivery_) {
      const uint64_t now_queued = members_.at(joiner).channel->queued_bytes();
      if (now_queued < queued) machine_.StateProgress(joiner, now);
      queued = now_queued;
    }
    for (auto& [id, member] : members_) {
      if (member.end_by.has_value() && *member.end_by <= now) EndFinishedStream(member);
    }
  }
  FlushChannels();
}

std::optional<absl::Time> RunCoordinator::NextDeadline() const {
  absl::MutexLock lock(&mu_);
  return machine_.deadline();
}

void RunCoordinator::Shutdown(absl::Time now) {
  {
    absl::MutexLock lock(&mu_);
    ShutdownLocked(now);
  }
  FlushChannels();
  if (saver_ != nullptr) saver_->WaitForSaves();
}

void RunCoordinator::ShutdownLocked(absl::Time now) {
  if (shut_down_) return;
  shut_down_ = true;
  Broadcast(MakeControl(v1::Control::KIND_SHUTTING_DOWN, "the coordinator is shutting down"));
  for (auto& [id, member] : members_) {
    EndStream(member, absl::UnavailableError("the coordinator is shutting down"));
    metrics_->WorkerLeft(member.name, LeaveReason::kShutdown);
    Record(member.name, "leave", "the coordinator shut down", now);
  }
  Save();
}

bool RunCoordinator::finished() const {
  absl::MutexLock lock(&mu_);
  return machine_.finished();
}

bool RunCoordinator::drained() const {
  absl::MutexLock lock(&mu_);
  return machine_.finished() && members_.empty();
}

void RunCoordinator::SendTo(WorkerId worker, std::shared_ptr<const OutboundMessage> message) {
  auto it = members_.find(worker);
  if (it == members_.end()) return;
  it->second.bytes_sent += message->size();
  metrics_->BytesSent(it->second.name, message->size());
  it->second.channel->Send(std::move(message));
  unflushed_.push_back(it->second.channel);
}

void RunCoordinator::SendToAll(
    const std::vector<std::shared_ptr<const OutboundMessage>>& messages) {
  for (const auto& [id, member] : members_) {
    for (const auto& message : messages) SendTo(id, message);
  }
}

void RunCoordinator::EndStream(Member& member, const absl::Status& status) {
  member.channel->End(status);
  unflushed_.push_back(member.channel);
}

void RunCoordinator::EndFinishedStream(Member& member) {
  if (!member.end_by.has_value()) return;
  member.end_by.reset();
  EndStream(member, absl::OkStatus());
}

void RunCoordinator::FlushChannels() {
  std::vector<std::shared_ptr<MemberChannel>> channels;
  {
    absl::MutexLock lock(&mu_);
    channels.swap(unflushed_);
  }
  // A channel appears once per message queued: flush each once.
  std::sort(channels.begin(), channels.end());
  channels.erase(std::unique(channels.begin(), channels.end()), channels.end());
  // gRPC writes inline, on the flushing thread, and a write costs the copy into the kernel (on
  // loopback also the receiver's TCP work): a step's fan-out to many members is spread over a
  // few threads, each flushing an equal share of the channels.
  const size_t threads = ThreadsFor(channels.size(), kChannelsPerFanOutThread, kMaxFanOutThreads);
  RunInParallel(threads, [&channels, threads](size_t share) {
    for (size_t i = share; i < channels.size(); i += threads) channels[i]->Flush();
  });
}

void RunCoordinator::SendControl(WorkerId worker, v1::Control control) {
  SendTo(worker, ControlMessage(std::move(control)));
}

void RunCoordinator::Broadcast(const v1::Control& control) { SendToAll({ControlMessage(control)}); }

void RunCoordinator::Record(const std::string& worker, const std::string& event,
                            const std::string& reason, absl::Time now) {
  persisted_.history.push_back(
      {machine_.completed_steps(), absl::ToUnixMillis(now), worker, event, reason});
  // The store keeps the last kMaxHistory events; memory need not keep more (every step's save
  // copies them). Events are rare, so dropping the oldest one at a time costs nothing.
  if (persisted_.history.size() > RunStore::kMaxHistory) {
    persisted_.history.erase(persisted_.history.begin());
  }
}

void RunCoordinator::Save() {
  if (saver_ == nullptr) return;
  persisted_.config = config_;
  persisted_.completed_steps = machine_.completed_steps();
  saver_->Submit(persisted_);
}

v1::RunStatus RunCoordinator::Status() const {
  absl::MutexLock lock(&mu_);
  v1::RunStatus status;
  status.set_run_id(config_.run_id);
  status.set_completed_steps(machine_.completed_steps());
  status.set_open_step(machine_.open_step().value_or(0));
  status.set_paused(machine_.paused());
  status.set_finished(machine_.finished());
  for (const MemberView& view : machine_.members()) {
    auto it = members_.find(view.id);
    if (it == members_.end()) continue;
    v1::MemberStatus* m = status.add_members();
    m->set_worker_id(view.id);
    m->set_name(view.name);
    *m->mutable_hardware() = it->second.hardware;
    m->set_active(view.active);
    m->set_last_seen_unix_ms(absl::ToUnixMillis(view.last_seen));
    m->set_bytes_received(it->second.bytes_received);
    m->set_bytes_sent(it->second.bytes_sent);
    m->set_contributions_missed(view.contributions_missed);
    m->set_queued_bytes(it->second.channel->queued_bytes());
  }
  return status;
}

}  // namespace demod
