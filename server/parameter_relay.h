// Parameter transfers to joiners. A joiner receives the run's parameters from a donor the
// StepMachine picks: the donor streams them in StateFrames, and the coordinator relays each
// frame to the joiner as the bytes it received. This class holds who streams to whom and how
// far each transfer has come, and judges every frame before it is relayed:
//
// - A frame from a donor that is not (or no longer) the joiner's is dropped: the joiner left,
//   or the machine gave it another donor while this one was streaming.
// - The first frame (offset 0) announces the transfer: a total of 1 to max_state_bytes bytes,
//   of a step the run has completed. A donor sending offset 0 again starts over.
// - Every later frame continues it: the next offset, the same total and step, 1 to
//   max_frame_bytes bytes of data that stay within the total.
// A frame that breaks these rules is INVALID_ARGUMENT, which ends the donor's stream.
//
// Pure logic with no I/O; thread-compatible (RunCoordinator calls it under its lock).
#ifndef DEMOD_SERVER_PARAMETER_RELAY_H_
#define DEMOD_SERVER_PARAMETER_RELAY_H_

#include <cstdint>
#include <map>

#include "absl/status/statusor.h"
#include "server/state_frame_header.h"
#include "server/step_machine.h"

namespace demod {

class ParameterRelay {
 public:
  explicit ParameterRelay(uint64_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

  // `donor` is to stream the parameters to `joiner`, from offset 0. Replaces a transfer to the
  // joiner already under way: its donor's later frames are dropped.
  void Start(WorkerId joiner, WorkerId donor);
  // The transfer to `joiner` is over or moot (it became active, or left). No-op without one.
  void End(WorkerId joiner);

  enum class Verdict {
    kDrop,      // not a frame of a transfer under way: drop it
    kRelay,     // send it on to the joiner
    kRelayLast  // send it on: the joiner then holds every byte, and the transfer is over
  };
  struct Judged {
    Verdict verdict = Verdict::kDrop;
    uint64_t total_bytes = 0;  // the transfer's, once announced
    int64_t step = 0;          // the step the parameters are at
  };
  // Judges a frame `donor` sent, against the run's bounds: `max_state_bytes` (what the tensor
  // table can hold) and `completed_steps`.
  absl::StatusOr<Judged> Judge(WorkerId donor, const StateFrameHeader& frame,
                               uint64_t max_state_bytes, int64_t completed_steps);

 private:
  struct Transfer {
    WorkerId donor;
    uint64_t next_offset = 0;
    uint64_t total_bytes = 0;  // 0 until the first frame
    int64_t step = 0;
  };

  const uint64_t max_frame_bytes_;
  std::map<WorkerId, Transfer> transfers_;  // by joiner
};

}  // namespace demod

#endif  // DEMOD_SERVER_PARAMETER_RELAY_H_
