#include "server/outbound_message.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace demod {
namespace {

std::string Bytes(const OutboundMessage& message) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(message.wire().Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes.size(), message.size());
  return bytes;
}

TEST(OutboundMessageTest, SerializesOnce) {
  v1::CoordinatorMessage message;
  message.mutable_control()->set_kind(v1::Control::KIND_PAUSED);
  message.mutable_control()->set_reason("too few workers");
  EXPECT_EQ(Bytes(OutboundMessage(message)), message.SerializeAsString());
}

// Lengths around the varint boundaries of the data's and the frame's length fields.
TEST(OutboundMessageTest, AggregateFrameHasProtobufsBytesWithoutCopyingTheData) {
  for (size_t size : {0, 1, 100, 127, 128, 16383, 16384, 1 << 20}) {
    for (int64_t step : {int64_t{0}, int64_t{1}, int64_t{1} << 40}) {
      const std::string data(size, static_cast<char>('a' + size % 26));
      v1::CoordinatorMessage expected;
      v1::AggregateFrame& frame = *expected.mutable_aggregate();
      frame.set_step(step);
      frame.set_total_bytes(3 * size + 7);
      frame.set_offset(size);
      frame.set_data(data);
      const std::string bytes =
          Bytes(*OutboundMessage::AggregateFrame(step, 3 * size + 7, size, data));
      ASSERT_EQ(bytes, expected.SerializeAsString()) << "data of " << size << ", step " << step;
      v1::CoordinatorMessage parsed;
      ASSERT_TRUE(parsed.ParseFromString(bytes));
      EXPECT_EQ(parsed.aggregate().data(), data);
    }
  }
}

TEST(OutboundMessageTest, ARelayedMessageIsSentAsReceived) {
  const std::string bytes = "\x2a\x03\x08\x01\x10";
  grpc::Slice slice(bytes);
  EXPECT_EQ(Bytes(OutboundMessage(grpc::ByteBuffer(&slice, 1))), bytes);
}

}  // namespace
}  // namespace demod
