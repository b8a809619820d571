// A message from the coordinator to one or more workers, serialized at most once however many
// streams send it: a step's aggregate frames go to every member, and serializing them per
// stream would copy the whole aggregate N times.
//
// Immutable once built, apart from the serialized form, which the first caller of wire()
// makes; thread-safe.
#ifndef DEMOD_SERVER_OUTBOUND_MESSAGE_H_
#define DEMOD_SERVER_OUTBOUND_MESSAGE_H_

#include <grpcpp/support/byte_buffer.h>

#include <cstddef>

#include "absl/base/call_once.h"
#include "demod/v1/coordinator.pb.h"

namespace demod {

class OutboundMessage {
 public:
  explicit OutboundMessage(v1::CoordinatorMessage message);

  OutboundMessage(const OutboundMessage&) = delete;
  OutboundMessage& operator=(const OutboundMessage&) = delete;

  const v1::CoordinatorMessage& message() const { return message_; }
  // Serialized bytes.
  size_t size() const { return size_; }
  // The serialized message. Copies of a ByteBuffer share its slices, so a stream can hold its
  // own copy for as long as its write lasts without copying the bytes.
  const grpc::ByteBuffer& wire() const;

 private:
  const v1::CoordinatorMessage message_;
  const size_t size_;
  mutable absl::once_flag serialized_;
  mutable grpc::ByteBuffer wire_;
};

}  // namespace demod

#endif  // DEMOD_SERVER_OUTBOUND_MESSAGE_H_
