#include "server/state_frame_header.h"

#include <algorithm>
#include <limits>

#include "demod/v1/coordinator.pb.h"

namespace demod {
namespace {

// The relay writes a received WorkerMessage on as a CoordinatorMessage.
static_assert(static_cast<int>(v1::WorkerMessage::kStateFieldNumber) ==
              static_cast<int>(v1::CoordinatorMessage::kStateFieldNumber));

constexpr uint32_t kVarint = 0;
constexpr uint32_t kLengthDelimited = 2;

constexpr uint32_t Tag(int field, uint32_t wire_type) {
  return (static_cast<uint32_t>(field) << 3) | wire_type;
}

// A bounds-checked reader of protobuf varints.
class Cursor {
 public:
  explicit Cursor(absl::string_view bytes) : bytes_(bytes) {}

  // Fails on a varint longer than 10 bytes or one that runs past the bytes.
  bool Varint(uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64 && position_ < bytes_.size(); shift += 7) {
      const auto byte = static_cast<uint8_t>(bytes_[position_++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return shift < 63 || byte <= 1;  // the 10th byte holds 1 bit
    }
    return false;
  }
  size_t position() const { return position_; }

 private:
  absl::string_view bytes_;
  size_t position_ = 0;
};

}  // namespace

std::optional<StateFrameHeader> ReadStateFrameHeader(absl::string_view prefix,
                                                     uint64_t message_bytes) {
  Cursor in(prefix.substr(0, std::min<uint64_t>(kStateFrameHeaderMaxBytes, message_bytes)));
  uint64_t tag = 0;
  uint64_t frame_bytes = 0;
  if (!in.Varint(tag) || tag != Tag(v1::WorkerMessage::kStateFieldNumber, kLengthDelimited) ||
      !in.Varint(frame_bytes) || frame_bytes != message_bytes - in.position()) {
    return std::nullopt;
  }
  StateFrameHeader header;
  while (in.position() < message_bytes) {
    uint64_t value = 0;
    if (!in.Varint(tag) || !in.Varint(value)) return std::nullopt;
    switch (tag) {
      case Tag(v1::StateFrame::kJoinerIdFieldNumber, kVarint):
        // protobuf would keep the low 32 bits; no worker sends such a value.
        if (value > std::numeric_limits<uint32_t>::max()) return std::nullopt;
        header.joiner_id = static_cast<uint32_t>(value);
        break;
      case Tag(v1::StateFrame::kStepFieldNumber, kVarint):
        header.step = static_cast<int64_t>(value);
        break;
      case Tag(v1::StateFrame::kTotalBytesFieldNumber, kVarint):
        header.total_bytes = value;
        break;
      case Tag(v1::StateFrame::kOffsetFieldNumber, kVarint):
        header.offset = value;
        break;
      case Tag(v1::StateFrame::kDataFieldNumber, kLengthDelimited):
        // The data must be the last field and run to the end of the message.
        if (value != message_bytes - in.position()) return std::nullopt;
        header.data_bytes = value;
        return header;
      default:
        return std::nullopt;
    }
  }
  return header;  // no data field: an empty frame, which the relay refuses
}

}  // namespace demod
