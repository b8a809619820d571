#include "server/outbound_message.h"

#include <grpcpp/impl/codegen/proto_utils.h>

#include <utility>
#include <vector>

#include "common/frame_assembler.h"
#include "common/logging.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"

namespace demod {

OutboundMessage::OutboundMessage(const v1::CoordinatorMessage& message)
    : size_(message.ByteSizeLong()) {
  bool own_buffer = false;
  const grpc::Status status =
      grpc::SerializationTraits<v1::CoordinatorMessage>::Serialize(message, &wire_, &own_buffer);
  // Only a message over 2 GiB fails, and frames are bounded by max_frame_bytes: a bug.
  if (!status.ok()) {
    Log(LogLevel::kError, "could not serialize a message: " + status.error_message());
  }
}

OutboundMessage::OutboundMessage(const grpc::ByteBuffer& serialized)
    : wire_(serialized), size_(serialized.Length()) {}

namespace {

using google::protobuf::internal::WireFormatLite;

// A length-delimited field's tag and length, as protobuf writes them.
void AppendLengthDelimitedHeader(int field, uint64_t length, std::string& out) {
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.WriteTag(WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  coded.WriteVarint64(length);
}

}  // namespace

std::shared_ptr<const OutboundMessage> OutboundMessage::AggregateFrame(
    int64_t step, uint64_t total_bytes, uint64_t offset, std::string data,
    int64_t last_payload_unix_micros) {
  // Protobuf writes fields in field-number order, and data is the only field that is not a
  // scalar: the bytes are the frame's tag and length, the fields before data, data's tag and
  // length, data, then the fields after it.
  static_assert(v1::AggregateFrame::kDataFieldNumber > v1::AggregateFrame::kOffsetFieldNumber &&
                v1::AggregateFrame::kDataFieldNumber > v1::AggregateFrame::kTotalBytesFieldNumber &&
                v1::AggregateFrame::kDataFieldNumber > v1::AggregateFrame::kStepFieldNumber &&
                v1::AggregateFrame::kLastPayloadUnixMicrosFieldNumber >
                    v1::AggregateFrame::kDataFieldNumber);
  v1::AggregateFrame before;
  before.set_step(step);
  before.set_total_bytes(total_bytes);
  before.set_offset(offset);
  std::string frame_head = before.SerializeAsString();
  if (!data.empty()) {
    AppendLengthDelimitedHeader(v1::AggregateFrame::kDataFieldNumber, data.size(), frame_head);
  }
  v1::AggregateFrame after;
  after.set_last_payload_unix_micros(last_payload_unix_micros);
  const std::string frame_tail = after.SerializeAsString();
  std::string head;
  AppendLengthDelimitedHeader(v1::CoordinatorMessage::kAggregateFieldNumber,
                              frame_head.size() + data.size() + frame_tail.size(), head);
  head += frame_head;

  std::vector<grpc::Slice> slices;
  slices.emplace_back(head);
  if (!data.empty()) {
    // The slice owns the string; gRPC releases it once every stream has written it.
    auto* owned = new std::string(std::move(data));
    slices.emplace_back(
        owned->data(), owned->size(),
        [](void* string) { delete static_cast<std::string*>(string); }, owned);
  }
  if (!frame_tail.empty()) slices.emplace_back(frame_tail);
  return std::make_shared<const OutboundMessage>(grpc::ByteBuffer(slices.data(), slices.size()));
}

std::vector<std::shared_ptr<const OutboundMessage>> OutboundMessage::AggregateFrames(
    int64_t step, std::string aggregate, uint64_t max_frame_bytes,
    int64_t last_payload_unix_micros) {
  std::vector<std::shared_ptr<const OutboundMessage>> frames;
  const uint64_t total_bytes = aggregate.size();
  const std::vector<Frame> parts = SplitIntoFrames(aggregate, max_frame_bytes);
  for (const Frame& f : parts) {
    frames.push_back(AggregateFrame(step, total_bytes, f.offset,
                                    parts.size() == 1 ? std::move(aggregate)  // no copy
                                                      : std::string(f.data),
                                    last_payload_unix_micros));
  }
  return frames;
}

}  // namespace demod
