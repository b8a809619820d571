// A message from the coordinator to one or more workers, serialized once however many streams
// send it: a step's aggregate frames go to every member, and serializing them per stream would
// copy the whole aggregate N times.
//
// Immutable; thread-safe.
#ifndef DEMOD_SERVER_OUTBOUND_MESSAGE_H_
#define DEMOD_SERVER_OUTBOUND_MESSAGE_H_

#include <grpcpp/support/byte_buffer.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "demod/v1/coordinator.pb.h"

namespace demod {

class OutboundMessage {
 public:
  explicit OutboundMessage(const v1::CoordinatorMessage& message);
  // A serialized CoordinatorMessage as it is (a received state frame relayed on): shares the
  // buffer's slices.
  explicit OutboundMessage(const grpc::ByteBuffer& serialized);

  // A CoordinatorMessage carrying an AggregateFrame, in the bytes protobuf would write, but
  // without copying `data`: the message is a small header, `data` itself, which it keeps, and
  // the field that follows data. (Serializing a step's aggregate copied it into fresh memory on
  // the step's critical path: about 0.2 ms at 8 workers.)
  static std::shared_ptr<const OutboundMessage> AggregateFrame(int64_t step, uint64_t total_bytes,
                                                               uint64_t offset, std::string data,
                                                               int64_t last_payload_unix_micros);
  // A step's whole encoded aggregate as frames of at most max_frame_bytes (>= 1), each built
  // once for every member's stream. An aggregate that fits one frame is not copied.
  static std::vector<std::shared_ptr<const OutboundMessage>> AggregateFrames(
      int64_t step, std::string aggregate, uint64_t max_frame_bytes,
      int64_t last_payload_unix_micros);

  OutboundMessage(const OutboundMessage&) = delete;
  OutboundMessage& operator=(const OutboundMessage&) = delete;

  // Serialized bytes.
  size_t size() const { return size_; }
  // The serialized message. Copies of a ByteBuffer share its slices, so a stream can hold its
  // own copy for as long as its write lasts without copying the bytes.
  const grpc::ByteBuffer& wire() const { return wire_; }

 private:
  grpc::ByteBuffer wire_;
  size_t size_ = 0;
};

}  // namespace demod

#endif  // DEMOD_SERVER_OUTBOUND_MESSAGE_H_
