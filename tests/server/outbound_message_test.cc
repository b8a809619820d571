#include "server/outbound_message.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
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

// Whether one of the message's slices is `buffer` itself (the message holds it, uncopied).
bool HoldsBuffer(const OutboundMessage& message, const char* buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(message.wire().Dump(&slices).ok());
  for (const grpc::Slice& slice : slices) {
    if (reinterpret_cast<const char*>(slice.begin()) == buffer) return true;
  }
  return false;
}

TEST(OutboundMessageTest, SerializesOnce) {
  v1::CoordinatorMessage message;
  message.mutable_control()->set_kind(v1::Control::KIND_PAUSED);
  message.mutable_control()->set_reason("too few workers");
  EXPECT_EQ(Bytes(OutboundMessage(message)), message.SerializeAsString());
}

// Lengths around the varint boundaries of the data's and the frame's length fields; with and
// without the field that follows the data.
TEST(OutboundMessageTest, AggregateFrameHasProtobufsBytes) {
  for (size_t size : {0, 1, 100, 127, 128, 16383, 16384, 1 << 20}) {
    for (int64_t step : {int64_t{0}, int64_t{1}, int64_t{1} << 40}) {
      for (int64_t last_payload : {int64_t{0}, int64_t{1764672000123456}, int64_t{-1}}) {
        const std::string data(size, static_cast<char>('a' + size % 26));
        v1::CoordinatorMessage expected;
        v1::AggregateFrame& frame = *expected.mutable_aggregate();
        frame.set_step(step);
        frame.set_total_bytes(3 * size + 7);
        frame.set_offset(size);
        frame.set_data(data);
        frame.set_last_payload_unix_micros(last_payload);
        const std::string bytes =
            Bytes(*OutboundMessage::AggregateFrame(step, 3 * size + 7, size, data, last_payload));
        ASSERT_EQ(bytes, expected.SerializeAsString())
            << "data of " << size << ", step " << step << ", last payload " << last_payload;
        v1::CoordinatorMessage parsed;
        ASSERT_TRUE(parsed.ParseFromString(bytes));
        EXPECT_EQ(parsed.aggregate().data(), data);
        EXPECT_EQ(parsed.aggregate().last_payload_unix_micros(), last_payload);
      }
    }
  }
}

TEST(OutboundMessageTest, AggregateFrameSendsTheDataWithoutCopyingIt) {
  std::string data(1 << 16, 'x');
  const char* const buffer = data.data();
  const size_t size = data.size();
  EXPECT_TRUE(
      HoldsBuffer(*OutboundMessage::AggregateFrame(7, size, 0, std::move(data), 42), buffer));
}

TEST(OutboundMessageTest, AggregateFramesCoverTheAggregateInOrder) {
  std::string aggregate(10, '\0');
  for (size_t i = 0; i < aggregate.size(); ++i) aggregate[i] = static_cast<char>('a' + i);
  std::vector<std::shared_ptr<const OutboundMessage>> frames =
      OutboundMessage::AggregateFrames(5, aggregate, 4, 99);
  ASSERT_EQ(frames.size(), 3u);
  std::string joined;
  for (size_t i = 0; i < frames.size(); ++i) {
    v1::CoordinatorMessage parsed;
    ASSERT_TRUE(parsed.ParseFromString(Bytes(*frames[i])));
    EXPECT_EQ(parsed.aggregate().step(), 5);
    EXPECT_EQ(parsed.aggregate().total_bytes(), 10u);
    EXPECT_EQ(parsed.aggregate().offset(), joined.size());
    EXPECT_EQ(parsed.aggregate().last_payload_unix_micros(), 99);
    joined += parsed.aggregate().data();
  }
  EXPECT_EQ(joined, aggregate);

  // One frame: the aggregate itself, not a copy.
  std::string whole(1 << 16, 'y');
  const char* const buffer = whole.data();
  frames = OutboundMessage::AggregateFrames(6, std::move(whole), 1 << 20, 0);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(HoldsBuffer(*frames[0], buffer));
}

TEST(OutboundMessageTest, ARelayedMessageIsSentAsReceived) {
  const std::string bytes = "\x2a\x03\x08\x01\x10";
  grpc::Slice slice(bytes);
  EXPECT_EQ(Bytes(OutboundMessage(grpc::ByteBuffer(&slice, 1))), bytes);
}

}  // namespace
}  // namespace demod
