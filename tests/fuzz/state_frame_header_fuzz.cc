// The state frame header read off the wire without parsing, against protobuf's own parse of
// the same bytes: whenever the reader finds a header, the message is a state frame with those
// fields and its data is the message's end.
#include <cstddef>
#include <cstdint>
#include <string>

#include "demod/v1/coordinator.pb.h"
#include "server/state_frame_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::optional<demod::StateFrameHeader> header =
      demod::ReadStateFrameHeader(bytes.substr(0, demod::kStateFrameHeaderMaxBytes), bytes.size());
  if (!header.has_value()) return 0;
  demod::v1::WorkerMessage message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) __builtin_trap();
  if (!message.has_state()) __builtin_trap();
  const demod::v1::StateFrame& frame = message.state();
  if (frame.joiner_id() != header->joiner_id || frame.step() != header->step ||
      frame.total_bytes() != header->total_bytes || frame.offset() != header->offset ||
      frame.data().size() != header->data_bytes) {
    __builtin_trap();
  }
  return 0;
}
