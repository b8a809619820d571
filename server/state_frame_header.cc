#include "server/state_frame_header.h"

#include <algorithm>
#include <limits>

#include "demod/v1/coordinator.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace demod {
namespace {

// The relay writes a received WorkerMessage on as a CoordinatorMessage.
static_assert(static_cast<int>(v1::WorkerMessage::kStateFieldNumber) ==
              static_cast<int>(v1::CoordinatorMessage::kStateFieldNumber));

using google::protobuf::internal::WireFormatLite;

constexpr uint32_t VarintTag(int field) {
  return WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_VARINT);
}
constexpr uint32_t LengthDelimitedTag(int field) {
  return WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
}

}  // namespace

std::optional<StateFrameHeader> ReadStateFrameHeader(absl::string_view prefix,
                                                     uint64_t message_bytes) {
  const size_t size = std::min<uint64_t>({prefix.size(), kStateFrameHeaderMaxBytes, message_bytes});
  // protobuf's own reader: its varints are read exactly as the joiner's parser will read them.
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(prefix.data()),
                                            static_cast<int>(size));
  // Bytes not yet read, of the whole message.
  const auto rest = [&in, message_bytes] {
    return message_bytes - static_cast<uint64_t>(in.CurrentPosition());
  };
  uint64_t frame_bytes = 0;
  if (in.ReadTag() != LengthDelimitedTag(v1::WorkerMessage::kStateFieldNumber) ||
      !in.ReadVarint64(&frame_bytes) || frame_bytes != rest()) {
    return std::nullopt;
  }
  StateFrameHeader header;
  while (rest() > 0) {
    const uint32_t tag = in.ReadTag();
    uint64_t value = 0;
    if (tag == 0 || !in.ReadVarint64(&value)) return std::nullopt;
    switch (tag) {
      case VarintTag(v1::StateFrame::kJoinerIdFieldNumber):
        // protobuf would keep the low 32 bits; no worker sends such a value.
        if (value > std::numeric_limits<uint32_t>::max()) return std::nullopt;
        header.joiner_id = static_cast<uint32_t>(value);
        break;
      case VarintTag(v1::StateFrame::kStepFieldNumber):
        header.step = static_cast<int64_t>(value);
        break;
      case VarintTag(v1::StateFrame::kTotalBytesFieldNumber):
        header.total_bytes = value;
        break;
      case VarintTag(v1::StateFrame::kOffsetFieldNumber):
        header.offset = value;
        break;
      case LengthDelimitedTag(v1::StateFrame::kDataFieldNumber):
        // The data must be the last field and run to the end of the message.
        if (value != rest()) return std::nullopt;
        header.data_bytes = value;
        return header;
      default:
        return std::nullopt;
    }
  }
  return header;  // no data field: an empty frame, which the relay refuses
}

}  // namespace demod
