#include "server/outbound_message.h"

#include <grpcpp/impl/codegen/proto_utils.h>

#include "common/logging.h"

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

}  // namespace demod
