// Reads a serialized state frame's header without parsing its data, so the coordinator can
// relay a donor's parameters to a joiner as the bytes it received.
//
// A WorkerMessage and a CoordinatorMessage that carry a StateFrame (both in field 5) are the
// same bytes, so a frame the coordinator accepts can be written on as it arrived: no parse
// that copies the data into a string, no serialization that copies it again (each into fresh
// memory, whose page faults cost as much as the copies).
//
// ReadStateFrameHeader accepts only the canonical encoding that protobuf writes: the frame in
// field 5, its scalar fields (in any order, as varints), then the data as the frame's last
// field, running to the end of the message. Anything else (unknown fields, data before a
// scalar, a varint that does not fit its field) gives nullopt, and the caller parses the
// message with protobuf as usual. What it returns is what protobuf would parse.
//
// Pure; thread-safe.
#ifndef DEMOD_SERVER_STATE_FRAME_HEADER_H_
#define DEMOD_SERVER_STATE_FRAME_HEADER_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"

namespace demod {

struct StateFrameHeader {
  uint32_t joiner_id = 0;
  int64_t step = 0;
  uint64_t total_bytes = 0;
  uint64_t offset = 0;
  uint64_t data_bytes = 0;  // the data field's length; the data ends the message
};

// The longest canonical header: the frame's tag and length, four scalar fields (a tag and a
// varint of up to 10 bytes each), and the data's tag and length.
inline constexpr size_t kStateFrameHeaderMaxBytes = (1 + 10) + 4 * (1 + 10) + (1 + 10);

// `prefix` is the start of a serialized WorkerMessage (or CoordinatorMessage) of
// `message_bytes` bytes in all; at most kStateFrameHeaderMaxBytes of it are read.
std::optional<StateFrameHeader> ReadStateFrameHeader(absl::string_view prefix,
                                                     uint64_t message_bytes);

}  // namespace demod

#endif  // DEMOD_SERVER_STATE_FRAME_HEADER_H_
