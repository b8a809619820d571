#include "worker/training/coordinator_exchange.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/payload_codec.h"
#include "common/run_settings.h"
#include "common/status_macros.h"
#include "worker/optimizer/aten_threads.h"

namespace demod {

CoordinatorExchange::CoordinatorExchange(CoordinatorClient* client,
                                         std::vector<NamedTensor> parameters,
                                         absl::Duration step_timeout, const std::atomic<bool>* stop)
    : client_(client),
      parameters_(std::move(parameters)),
      step_timeout_(step_timeout),
      stop_(stop) {}

absl::Status CoordinatorExchange::Register(const LayoutTable& table) {
  // The coordinator admitted the join's tensors and derives the run's table from them as
  // below: an optimizer with another table would send payloads the run refuses.
  std::vector<TensorShape> shapes;
  for (const v1::TensorSpec& spec : client_->join().tensors()) {
    shapes.push_back({spec.name(), {spec.shape().begin(), spec.shape().end()}});
  }
  DEMOD_ASSIGN_OR_RETURN(const OptimizerConfig optimizer,
                         OptimizerConfigOf(client_->welcome().run().optimizer()));
  DEMOD_ASSIGN_OR_RETURN(LayoutTable run, MakeRunLayoutTable(shapes, optimizer));
  DEMOD_RETURN_IF_ERROR(CheckSameLayoutTable(run, table));
  table_ = table;
  return absl::OkStatus();
}

absl::StatusOr<ClientEvent> CoordinatorExchange::NextEvent() {
  // Short waits, so a stop request is honoured while the run is paused or a step is slow.
  const absl::Time give_up = absl::Now() + step_timeout_;
  absl::StatusOr<ClientEvent> next = absl::DeadlineExceededError("");
  while (true) {
    if (stop_ != nullptr && stop_->load()) return absl::CancelledError("stop requested");
    next = client_->Next(std::min(absl::Seconds(1), give_up - absl::Now()));
    if (next.ok() || !absl::IsDeadlineExceeded(next.status()) || absl::Now() >= give_up) break;
  }
  DEMOD_ASSIGN_OR_RETURN(ClientEvent event, std::move(next));
  if (event.kind == ClientEvent::Kind::kEnded) {
    if (event.status.ok()) {
      return finished_ ? absl::OutOfRangeError("the run has finished")
                       : absl::UnavailableError("the coordinator ended the stream");
    }
    return event.status;
  }
  return event;
}

absl::Status CoordinatorExchange::Serve(ClientEvent& event) {
  switch (event.kind) {
    case ClientEvent::Kind::kSendState: {
      // The optimizer is between steps (or blocked in one): a transfer's first range copies
      // the parameters of the last applied step.
      return donor_.Serve(*client_, event, applied_step_, [&] {
        std::string state = SerializeTensors(parameters_);
        ++parameters_sent_;
        Log(LogLevel::kInfo, absl::StrCat("sending ", state.size(),
                                          " bytes of parameters to worker ", event.joiner));
        return state;
      });
    }
    case ClientEvent::Kind::kResync:
      Log(LogLevel::kWarning, absl::StrCat("resync: ", event.reason));
      resync_requested_ = true;
      return absl::OkStatus();
    case ClientEvent::Kind::kPaused:
      Log(LogLevel::kInfo, absl::StrCat("run paused: ", event.reason));
      return absl::OkStatus();
    case ClientEvent::Kind::kNotIncluded:
      // The aggregate's contributor list already told the optimizer; this is the log line.
      Log(LogLevel::kInfo, absl::StrCat("payload not included: ", event.reason));
      return absl::OkStatus();
    case ClientEvent::Kind::kFinished:
      finished_ = true;
      return absl::OkStatus();
    case ClientEvent::Kind::kBatchShare:
      if (batch_samples_ != event.batch_samples) {
        Log(LogLevel::kInfo, absl::StrCat("batch share: ", event.reason));
      }
      batch_samples_ = event.batch_samples;
      return absl::OkStatus();
    case ClientEvent::Kind::kEvicted:
      return absl::AbortedError(absl::StrCat("evicted: ", event.reason));
    case ClientEvent::Kind::kShuttingDown:
      return absl::UnavailableError("the coordinator is shutting down");
    case ClientEvent::Kind::kAggregate:
      pending_aggregates_[event.step] = std::move(event.bytes);
      return absl::OkStatus();
    case ClientEvent::Kind::kState:
      if (resync_requested_) {
        // The fresh parameters can arrive before the step in progress closes; they are
        // loaded by ReceiveParameters, which replays the aggregates kept since.
        resync_state_ = std::move(event);
        return absl::OkStatus();
      }
      break;
    case ClientEvent::Kind::kActive:
    case ClientEvent::Kind::kEnded:
      break;
  }
  return absl::InternalError(
      absl::StrCat("unexpected ", ClientEventKindName(event.kind), " from the coordinator"));
}

std::string CoordinatorExchange::TakePendingAggregate(int64_t step) {
  std::string bytes = std::move(pending_aggregates_[step]);
  pending_aggregates_.erase(pending_aggregates_.begin(), pending_aggregates_.upper_bound(step));
  return bytes;
}

absl::StatusOr<ExchangeResult> CoordinatorExchange::ExchangeStep(int64_t step,
                                                                 std::string payload) {
  DEMOD_RETURN_IF_ERROR(client_->SendPayload(step, payload, step_samples_));
  while (pending_aggregates_.count(step) == 0) {
    if (finished_) return absl::OutOfRangeError("the run has finished");
    DEMOD_ASSIGN_OR_RETURN(ClientEvent event, NextEvent());
    DEMOD_RETURN_IF_ERROR(Serve(event));
  }
  ExchangeResult result;
  const std::string bytes = TakePendingAggregate(step);
  // After a resync notice the fresh parameters may be of an earlier step than this one:
  // keep what is applied now, to apply again on top of them.
  if (resync_requested_) applied_since_resync_[step] = bytes;
  DEMOD_ASSIGN_OR_RETURN(result.aggregate, DecodeStepAggregate(bytes, table_, AtenThreads()));
  const std::vector<uint32_t>& contributors = result.aggregate.contributors;
  result.own_contribution_included =
      std::binary_search(contributors.begin(), contributors.end(), client_->worker_id());
  result.bytes_received = static_cast<int64_t>(bytes.size());
  applied_step_ = step;  // the optimizer applies it before anything else is served
  last_contributors_ = contributors;
  return result;
}

absl::StatusOr<bool> CoordinatorExchange::CatchUpIfClosed(int64_t step, StepOptimizer& optimizer) {
  while (pending_aggregates_.count(step) == 0) {
    if (resync_requested_ || finished_) return false;
    absl::StatusOr<ClientEvent> event = client_->Next(absl::ZeroDuration());
    if (absl::IsDeadlineExceeded(event.status())) return false;  // nothing more has arrived
    DEMOD_RETURN_IF_ERROR(event.status());
    // The stream ended: the next exchange says how.
    if (event->kind == ClientEvent::Kind::kEnded) return false;
    DEMOD_RETURN_IF_ERROR(Serve(*event));
  }
  if (resync_requested_) return false;
  DEMOD_ASSIGN_OR_RETURN(StepAggregate aggregate,
                         DecodeStepAggregate(TakePendingAggregate(step), table_, AtenThreads()));
  DEMOD_RETURN_IF_ERROR(optimizer.CatchUp(aggregate));
  applied_step_ = step;
  last_contributors_ = aggregate.contributors;
  return true;
}

absl::StatusOr<int64_t> CoordinatorExchange::ReceiveParameters(
    bool expect_state, StepOptimizer& optimizer, const std::function<double(int64_t)>& lr_at) {
  resync_requested_ = false;
  bool have_state = !expect_state;
  // Once the parameters are here every aggregate is applied as it arrives, so the parameters
  // are always those of applied_step_: the coordinator may pick this worker as a donor as
  // soon as its parameters have arrived, before it is active.
  const auto catch_up = [&](int64_t step, const std::string& bytes) -> absl::Status {
    if (step <= applied_step_) return absl::OkStatus();
    DEMOD_ASSIGN_OR_RETURN(StepAggregate aggregate,
                           DecodeStepAggregate(bytes, table_, AtenThreads()));
    optimizer.set_lr(lr_at(step));
    DEMOD_RETURN_IF_ERROR(optimizer.CatchUp(aggregate));
    applied_step_ = step;
    return absl::OkStatus();
  };
  const auto load_state = [&](const ClientEvent& state) -> absl::Status {
    DEMOD_RETURN_IF_ERROR(LoadTensors(state.bytes, parameters_));
    have_state = true;
    applied_step_ = state.step;
    optimizer.set_step_count(state.step);
    Log(LogLevel::kInfo, absl::StrCat("received ", state.bytes.size(),
                                      " bytes of parameters (after step ", state.step, ")"));
    // Aggregates closed since the join (or applied since a resync notice) go on top, in order.
    std::map<int64_t, std::string> kept = std::move(applied_since_resync_);
    applied_since_resync_.clear();
    for (auto& [step, bytes] : pending_aggregates_) kept[step] = std::move(bytes);
    pending_aggregates_.clear();
    for (const auto& [step, bytes] : kept) DEMOD_RETURN_IF_ERROR(catch_up(step, bytes));
    return absl::OkStatus();
  };
  if (resync_state_.has_value()) {
    ClientEvent state = *std::move(resync_state_);
    resync_state_.reset();
    DEMOD_RETURN_IF_ERROR(load_state(state));
  }
  while (true) {
    DEMOD_ASSIGN_OR_RETURN(ClientEvent event, NextEvent());
    switch (event.kind) {
      case ClientEvent::Kind::kState:
        DEMOD_RETURN_IF_ERROR(load_state(event));
        break;
      case ClientEvent::Kind::kAggregate:
        if (have_state) {
          DEMOD_RETURN_IF_ERROR(catch_up(event.step, event.bytes));
        } else {
          pending_aggregates_[event.step] = std::move(event.bytes);
        }
        break;
      case ClientEvent::Kind::kActive:
        if (!have_state) {
          // Every member that held the parameters left before sending them: this worker's
          // own parameters are now the run's (the coordinator made it the seed).
          Log(LogLevel::kWarning,
              "no member is left to send the parameters: this worker's "
              "own become the run's");
          have_state = true;
          expect_state = false;
          pending_aggregates_.clear();
        }
        // A seed's parameters are the run's, whatever step they were saved at.
        if (!expect_state) applied_step_ = event.step - 1;
        if (applied_step_ != event.step - 1) {
          return absl::InternalError(absl::StrCat("activated for step ", event.step,
                                                  " with parameters of step ", applied_step_));
        }
        optimizer.set_step_count(applied_step_);
        return event.step;
      default:
        DEMOD_RETURN_IF_ERROR(Serve(event));
        if (finished_) return absl::OutOfRangeError("the run has finished");
    }
  }
}

}  // namespace demod
