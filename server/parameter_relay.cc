#include "server/parameter_relay.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace demod {

std::vector<ParameterRelay::Request> ParameterRelay::Start(WorkerId joiner, WorkerId donor) {
  std::vector<Request> requests;
  if (std::optional<Request> end = End(joiner); end.has_value()) requests.push_back(*end);
  transfers_[joiner] = Transfer{donor, 0, window_bytes_};
  requests.push_back(Request{donor, joiner, 0, window_bytes_});
  return requests;
}

std::optional<ParameterRelay::Request> ParameterRelay::End(WorkerId joiner) {
  auto found = transfers_.find(joiner);
  if (found == transfers_.end()) return std::nullopt;
  const WorkerId donor = found->second.donor;
  transfers_.erase(found);
  return Request{donor, joiner, 0, 0};
}

std::optional<uint64_t> ParameterRelay::QueueRoom(WorkerId joiner) const {
  auto found = transfers_.find(joiner);
  if (found == transfers_.end()) return std::nullopt;
  const Transfer& t = found->second;
  const uint64_t owed = t.requested_end - t.next_offset;
  if (t.total_bytes == 0 || t.requested_end >= t.total_bytes || owed > window_bytes_) {
    return std::nullopt;
  }
  return window_bytes_ - owed;
}

std::optional<ParameterRelay::Request> ParameterRelay::Next(WorkerId joiner,
                                                            uint64_t joiner_queued_bytes) {
  const std::optional<uint64_t> room = QueueRoom(joiner);
  if (!room.has_value() || joiner_queued_bytes > *room) return std::nullopt;
  Transfer& t = transfers_.at(joiner);
  const Request next{t.donor, joiner, t.requested_end,
                     std::min(window_bytes_, t.total_bytes - t.requested_end)};
  t.requested_end += next.length;
  return next;
}

absl::StatusOr<ParameterRelay::Judged> ParameterRelay::Judge(WorkerId donor,
                                                             const StateFrameHeader& frame,
                                                             uint64_t max_state_bytes,
                                                             int64_t completed_steps) {
  auto found = transfers_.find(frame.joiner_id);
  if (found == transfers_.end() || found->second.donor != donor) return Judged{};
  Transfer& t = found->second;
  if (frame.offset == 0 && t.next_offset == 0) {
    if (frame.total_bytes == 0 || frame.total_bytes > max_state_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("state for worker ", frame.joiner_id,
                                                     ": total_bytes ", frame.total_bytes,
                                                     " is not in [1, ", max_state_bytes, "]"));
    }
    if (frame.step < 0 || frame.step > completed_steps) {
      return absl::InvalidArgumentError(
          absl::StrCat("state for worker ", frame.joiner_id, ": step ", frame.step,
                       " is not a completed step (", completed_steps, " completed)"));
    }
    t.total_bytes = frame.total_bytes;
    t.step = frame.step;
  }
  if (t.total_bytes == 0 || frame.offset != t.next_offset || frame.total_bytes != t.total_bytes ||
      frame.step != t.step || frame.data_bytes > max_frame_bytes_ ||
      frame.data_bytes > t.total_bytes - t.next_offset || frame.data_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("state frame for worker ", frame.joiner_id, " at offset ", frame.offset,
                     " with ", frame.data_bytes, " bytes of ", frame.total_bytes, " for step ",
                     frame.step, " does not continue the transfer (expected offset ", t.next_offset,
                     " of ", t.total_bytes, ", frames of 1 to ", max_frame_bytes_, " bytes)"));
  }
  if (frame.data_bytes > t.requested_end - t.next_offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("state frame for worker ", frame.joiner_id, " at offset ", frame.offset,
                     " with ", frame.data_bytes,
                     " bytes goes past what was asked for (bytes up to ", t.requested_end, ")"));
  }
  t.next_offset += frame.data_bytes;
  Judged judged{Verdict::kRelay, t.total_bytes, t.step};
  if (t.next_offset == t.total_bytes) {
    judged.verdict = Verdict::kRelayLast;
    transfers_.erase(found);
  }
  return judged;
}

}  // namespace demod
