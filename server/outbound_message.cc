#include "server/outbound_message.h"

#include <grpcpp/impl/codegen/proto_utils.h>

#include <utility>

#include "common/logging.h"

namespace demod {

OutboundMessage::OutboundMessage(v1::CoordinatorMessage message)
    : message_(std::move(message)), size_(message_.ByteSizeLong()) {}

const grpc::ByteBuffer& OutboundMessage::wire() const {
  absl::call_once(serialized_, [this] {
    bool own_buffer = false;
    const grpc::Status status =
        grpc::SerializationTraits<v1::CoordinatorMessage>::Serialize(message_, &wire_, &own_buffer);
    // Only a message over 2 GiB fails, and frames are bounded by max_frame_bytes: a bug.
    if (!status.ok()) {
      Log(LogLevel::kError, "could not serialize a message: " + status.error_message());
    }
  });
  return wire_;
}

}  // namespace demod
