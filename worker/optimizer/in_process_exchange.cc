#include "worker/optimizer/in_process_exchange.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/aggregation.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "common/status_macros.h"
#include "worker/optimizer/aten_threads.h"

namespace demod {

InProcessHub::InProcessHub(int num_workers, absl::Duration timeout)
    : num_workers_(num_workers), timeout_(timeout) {}

void InProcessHub::SetLeftOut(std::function<bool(uint32_t, int64_t)> left_out) {
  absl::MutexLock lock(&mu_);
  left_out_ = std::move(left_out);
}

absl::Status InProcessHub::Register(const LayoutTable& table) {
  absl::MutexLock lock(&mu_);
  if (!table_.has_value()) {
    table_ = table;
    return absl::OkStatus();
  }
  return CheckSameLayoutTable(*table_, table);
}

absl::StatusOr<std::string> InProcessHub::CloseRound(int64_t step, Round& round,
                                                     std::vector<uint32_t>* contributors) {
  std::vector<StepPayload> decoded;
  decoded.reserve(round.payloads.size());
  for (const auto& [worker, bytes] : round.payloads) {
    if (left_out_ && left_out_(worker, step)) continue;
    absl::StatusOr<StepPayload> payload = DecodeStepPayload(bytes, *table_, AtenThreads());
    if (!payload.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker ", worker, " step ", step, ": ", payload.status().message()));
    }
    if (payload->step != step) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker ", worker, " sent step ", payload->step, " as step ", step));
    }
    decoded.push_back(*std::move(payload));
    contributors->push_back(worker);
  }
  if (decoded.empty()) {
    return absl::UnavailableError(absl::StrCat("step ", step, ": every payload was left out"));
  }
  std::vector<Contribution> contributions;
  for (size_t i = 0; i < decoded.size(); ++i) {
    contributions.push_back({(*contributors)[i], &decoded[i]});
  }
  // What the coordinator sends: the same bytes as EncodeStepAggregate(AggregateStep(...)),
  // each tensor encoded by the thread that aggregated it.
  return AggregateStepEncoded(contributions, *table_, Weighting::kEqual, AtenThreads());
}

absl::StatusOr<InProcessHub::Delivery> InProcessHub::Exchange(uint32_t worker, int64_t step,
                                                              std::string payload) {
  absl::MutexLock lock(&mu_);
  if (!table_.has_value()) return absl::FailedPreconditionError("no table registered");
  Round& round = rounds_[step];
  if (!round.payloads.emplace(worker, std::move(payload)).second) {
    return absl::AlreadyExistsError(absl::StrCat("worker ", worker, " sent step ", step, " twice"));
  }
  if (static_cast<int>(round.payloads.size()) == num_workers_) {
    round.aggregate = CloseRound(step, round, &round.contributors);
  }
  auto closed = [&round]() { return round.aggregate.has_value(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&closed), timeout_)) {
    return absl::DeadlineExceededError(
        absl::StrCat("step ", step, ": ", round.payloads.size(), " of ", num_workers_,
                     " workers arrived within ", absl::FormatDuration(timeout_)));
  }
  absl::StatusOr<std::string> bytes = *round.aggregate;
  Delivery delivery;
  for (uint32_t c : round.contributors) delivery.included |= (c == worker);
  if (++round.collected == num_workers_) rounds_.erase(step);
  DEMOD_RETURN_IF_ERROR(bytes.status());
  delivery.aggregate_bytes = *std::move(bytes);
  return delivery;
}

InProcessExchange::InProcessExchange(InProcessHub* hub, uint32_t worker_id)
    : hub_(hub), worker_id_(worker_id) {}

absl::Status InProcessExchange::Register(const LayoutTable& table) {
  if (worker_id_ >= static_cast<uint32_t>(hub_->num_workers())) {
    return absl::InvalidArgumentError(absl::StrCat("worker id ", worker_id_, " out of range for ",
                                                   hub_->num_workers(), " workers"));
  }
  DEMOD_RETURN_IF_ERROR(hub_->Register(table));
  table_ = table;
  return absl::OkStatus();
}

absl::StatusOr<ExchangeResult> InProcessExchange::ExchangeStep(int64_t step, std::string payload) {
  if (!table_.has_value()) return absl::FailedPreconditionError("Register was not called");
  DEMOD_ASSIGN_OR_RETURN(InProcessHub::Delivery delivery,
                         hub_->Exchange(worker_id_, step, std::move(payload)));
  // Every worker decodes the same bytes, as it would the coordinator's.
  ExchangeResult result;
  DEMOD_ASSIGN_OR_RETURN(result.aggregate,
                         DecodeStepAggregate(delivery.aggregate_bytes, *table_, AtenThreads()));
  result.own_contribution_included = delivery.included;
  result.bytes_received = static_cast<int64_t>(delivery.aggregate_bytes.size());
  return result;
}

}  // namespace demod
