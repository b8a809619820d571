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

// A length prefix as protobuf's parser reads it: a varint of at most 5 bytes and below 2^31.
// (CodedInputStream also takes longer encodings of lengths and tags, which the joiner's parser
// would refuse; tests/fuzz/state_frame_header_fuzz found both differences.)
bool ReadLength(google::protobuf::io::CodedInputStream& in, uint64_t* length) {
  const int start = in.CurrentPosition();
  return in.ReadVarint64(length) && in.CurrentPosition() - start <= 5 &&
         *length <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
}

// A field's tag as protobuf's parser reads it: at most 5 bytes (0: none it would take).
uint32_t ReadTag(google::protobuf::io::CodedInputStream& in) {
  const int start = in.CurrentPosition();
  const uint32_t tag = in.ReadTag();
  return in.CurrentPosition() - start <= 5 ? tag : 0;
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
  if (ReadTag(in) != LengthDelimitedTag(v1::WorkerMessage::kStateFieldNumber) ||
      !ReadLength(in, &frame_bytes) || frame_bytes != rest()) {
    return std::nullopt;
  }
  StateFrameHeader header;
  while (rest() > 0) {
    const uint32_t tag = ReadTag(in);
    uint64_t value = 0;
    const bool length_delimited = tag == LengthDelimitedTag(v1::StateFrame::kDataFieldNumber);
    if (tag == 0 || !(length_delimited ? ReadLength(in, &value) : in.ReadVarint64(&value))) {
      return std::nullopt;
    }
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
