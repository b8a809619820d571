#include "server/parameter_relay.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace demod {

void ParameterRelay::Start(WorkerId joiner, WorkerId donor) {
  transfers_[joiner] = Transfer{donor};
}

void ParameterRelay::End(WorkerId joiner) { transfers_.erase(joiner); }

absl::StatusOr<ParameterRelay::Judged> ParameterRelay::Judge(WorkerId donor,
                                                             const StateFrameHeader& frame,
                                                             uint64_t max_state_bytes,
                                                             int64_t completed_steps) {
  auto found = transfers_.find(frame.joiner_id);
  if (found == transfers_.end() || found->second.donor != donor) return Judged{};
  Transfer& t = found->second;
  if (frame.offset == 0) {
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
    t.next_offset = 0;
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
  t.next_offset += frame.data_bytes;
  Judged judged{Verdict::kRelay, t.total_bytes, t.step};
  if (t.next_offset == t.total_bytes) {
    judged.verdict = Verdict::kRelayLast;
    transfers_.erase(found);
  }
  return judged;
}

}  // namespace demod
