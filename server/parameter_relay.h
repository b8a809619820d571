// Parameter transfers to joiners. A joiner receives the run's parameters from a donor the
// StepMachine picks. The transfer is pulled: the coordinator asks the donor for one window of
// bytes at a time (Control KIND_SEND_STATE with an offset and a length) and relays each frame
// it receives to the joiner as the bytes it received. It asks for the next window only while
// what is asked for and not yet received, plus what waits in the joiner's outbound queue, is
// at most one window. So a slow joiner holds at most two windows in the coordinator, and the
// donor never blocks on it.
//
// This class holds who sends to whom, how far each transfer has come and what was asked for,
// and judges every frame before it is relayed:
// - A frame from a donor that is not (or no longer) the joiner's is dropped: the joiner left,
//   or the machine gave it another donor while this one was sending.
// - The first frame (offset 0) announces the transfer: a total of 1 to max_state_bytes bytes,
//   of a step the run has completed.
// - Every later frame continues it: the next offset, the same total and step, 1 to
//   max_frame_bytes bytes of data that stay within the total and within what was asked for.
// A frame that breaks these rules is INVALID_ARGUMENT, which ends the donor's stream.
//
// Pure logic with no I/O; thread-compatible (RunCoordinator calls it under its lock).
#ifndef DEMOD_SERVER_PARAMETER_RELAY_H_
#define DEMOD_SERVER_PARAMETER_RELAY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/state_frame_header.h"
#include "server/step_machine.h"

namespace demod {

class ParameterRelay {
 public:
  // How many frames of max_frame_bytes one request asks for.
  static constexpr uint64_t kWindowFrames = 4;

  explicit ParameterRelay(uint64_t max_frame_bytes)
      : max_frame_bytes_(max_frame_bytes), window_bytes_(kWindowFrames * max_frame_bytes) {}

  // What to ask a donor for: bytes [offset, offset + length) of its parameters for `joiner`.
  // Length 0 tells the donor the transfer is over (it drops its copy).
  struct Request {
    WorkerId donor;
    WorkerId joiner;
    uint64_t offset = 0;
    uint64_t length = 0;
    friend bool operator==(const Request& x, const Request& y) {
      return x.donor == y.donor && x.joiner == y.joiner && x.offset == y.offset &&
             x.length == y.length;
    }
  };

  // `donor` is to send the parameters to `joiner`, from offset 0; returns the requests to
  // send, in order: the first window, after the end of a transfer to the joiner already under
  // way (whose donor's later frames are dropped).
  std::vector<Request> Start(WorkerId joiner, WorkerId donor);
  // The transfer to `joiner` is over or moot (it became active, or left): the request that
  // tells its donor, if one was under way.
  std::optional<Request> End(WorkerId joiner);

  // The next window of the transfer to `joiner`, if it is due: the transfer's size is known,
  // bytes remain to be asked for, and the bytes asked for and not yet received plus
  // `joiner_queued_bytes` (what waits in the joiner's outbound queue) are at most a window.
  std::optional<Request> Next(WorkerId joiner, uint64_t joiner_queued_bytes);
  // The most bytes the joiner's queue may hold for Next to ask for a window; none when no
  // window can be due whatever the queue holds (the size is not known yet, everything was
  // asked for, or the donor owes more than a window: its frames will come first).
  std::optional<uint64_t> QueueRoom(WorkerId joiner) const;

  // The most bytes of parameters that wait for one joiner, asked for or queued: two windows.
  uint64_t max_outstanding_bytes() const { return 2 * window_bytes_; }

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
    uint64_t requested_end = 0;  // bytes [0, requested_end) were asked for
    uint64_t total_bytes = 0;    // 0 until the first frame
    int64_t step = 0;
  };

  const uint64_t max_frame_bytes_;
  const uint64_t window_bytes_;
  std::map<WorkerId, Transfer> transfers_;  // by joiner
};

}  // namespace demod

#endif  // DEMOD_SERVER_PARAMETER_RELAY_H_
