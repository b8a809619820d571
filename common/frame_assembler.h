// Payloads and aggregates travel over gRPC in frames of at most max_frame_bytes, so a model of
// any size fits under gRPC's message limits (proto/demod/v1/coordinator.proto: PayloadFrame,
// AggregateFrame, StateFrame). SplitIntoFrames cuts a message; FrameAssembler puts one back
// together and trusts nothing: frames must arrive in order, without gaps or overlaps, with one
// total size that is within the limit, for one message at a time. Both sides use it: the
// coordinator for payloads, a worker for aggregates and parameters.
//
// Restarts. A frame at offset 0 while a message is incomplete is refused, unless the stream
// may start a message over: a worker's parameter transfer restarts at offset 0 when the
// coordinator gives it a new donor (whose parameters may be of another step and size). Payloads
// and aggregates have one sender each and never restart, so a restart there is a broken sender.
//
// FrameAssembler is thread-compatible: one per stream.
#ifndef DEMOD_COMMON_FRAME_ASSEMBLER_H_
#define DEMOD_COMMON_FRAME_ASSEMBLER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace demod {

struct Frame {
  uint64_t offset;
  absl::string_view data;  // points into the message passed to SplitIntoFrames
};

// Frames of at most max_frame_bytes (>= 1) covering `message` in order; one empty frame for an
// empty message.
std::vector<Frame> SplitIntoFrames(absl::string_view message, uint64_t max_frame_bytes);

class FrameAssembler {
 public:
  enum class Restarts {
    kRefused,              // a frame at offset 0 mid-message is an error
    kAllowedAtOffsetZero,  // it drops the incomplete message and starts a new one
  };
  FrameAssembler(uint64_t max_message_bytes, uint64_t max_frame_bytes,
                 Restarts restarts = Restarts::kRefused);

  // Adds a frame of message `id` (a step number, say). Returns the message once its last
  // frame arrived, nullopt before. INVALID_ARGUMENT, naming the message, for: a frame larger
  // than max_frame_bytes, a total over max_message_bytes, a total that changes, an offset
  // other than the bytes received so far, data past the total, an empty frame before the end,
  // or a frame of another message while one is incomplete (with kAllowedAtOffsetZero, a frame
  // at offset 0 of any message is not such a frame: it starts that message). After an error
  // the assembler is empty again.
  absl::StatusOr<std::optional<std::string>> Add(int64_t id, uint64_t total_bytes, uint64_t offset,
                                                 absl::string_view data);
  // Add, taking the frame's bytes: a message that fits one frame is returned without a copy.
  absl::StatusOr<std::optional<std::string>> AddOwned(int64_t id, uint64_t total_bytes,
                                                      uint64_t offset, std::string data);

  // Whether part of a message has arrived.
  bool in_progress() const { return id_.has_value(); }

 private:
  // Forgets the message in progress.
  void Reset();
  absl::Status Fail(std::string message);

  const uint64_t max_message_bytes_;
  const uint64_t max_frame_bytes_;
  const Restarts restarts_;
  std::optional<int64_t> id_;
  uint64_t total_ = 0;
  std::string buffer_;
};

}  // namespace demod

#endif  // DEMOD_COMMON_FRAME_ASSEMBLER_H_
