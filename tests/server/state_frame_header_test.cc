#include "server/state_frame_header.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "demod/v1/coordinator.pb.h"

namespace demod {
namespace {

v1::StateFrame Frame(uint32_t joiner, int64_t step, uint64_t total, uint64_t offset,
                     std::string data) {
  v1::StateFrame frame;
  frame.set_joiner_id(joiner);
  frame.set_step(step);
  frame.set_total_bytes(total);
  frame.set_offset(offset);
  frame.set_data(std::move(data));
  return frame;
}

std::string Serialized(const v1::StateFrame& frame) {
  v1::WorkerMessage message;
  *message.mutable_state() = frame;
  return message.SerializeAsString();
}

std::optional<StateFrameHeader> Read(const std::string& message) {
  return ReadStateFrameHeader(message, message.size());
}

void ExpectHeaderOf(const v1::StateFrame& frame, const StateFrameHeader& header) {
  EXPECT_EQ(header.joiner_id, frame.joiner_id());
  EXPECT_EQ(header.step, frame.step());
  EXPECT_EQ(header.total_bytes, frame.total_bytes());
  EXPECT_EQ(header.offset, frame.offset());
  EXPECT_EQ(header.data_bytes, frame.data().size());
}

// A varint, as protobuf writes one.
std::string Varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out.push_back(static_cast<char>(0x80 | (value & 0x7f)));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
  return out;
}

// WorkerMessage{state: <frame bytes>}, for frames protobuf would not write.
std::string WithFrameBytes(const std::string& frame) {
  return std::string(1, '\x2a') + Varint(frame.size()) + frame;
}

TEST(StateFrameHeaderTest, ReadsWhatProtobufWrites) {
  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  for (const v1::StateFrame& frame :
       {Frame(1, 0, 10, 0, "0123456789"), Frame(7, 42, 3 << 20, 1 << 20, std::string(1 << 20, 'p')),
        Frame(std::numeric_limits<uint32_t>::max(), std::numeric_limits<int64_t>::max(), kMax,
              kMax - 1, "x"),
        Frame(0, -1, 0, 0, "negative steps are ten-byte varints")}) {
    const std::string message = Serialized(frame);
    std::optional<StateFrameHeader> header = Read(message);
    ASSERT_TRUE(header.has_value()) << frame.ShortDebugString().substr(0, 80);
    ExpectHeaderOf(frame, *header);
    // Only the prefix is needed.
    header = ReadStateFrameHeader(absl::string_view(message).substr(0, kStateFrameHeaderMaxBytes),
                                  message.size());
    ASSERT_TRUE(header.has_value());
    ExpectHeaderOf(frame, *header);
  }
}

TEST(StateFrameHeaderTest, TheRelayedBytesAreTheCoordinatorsMessage) {
  const v1::StateFrame frame = Frame(3, 5, 100, 40, std::string(60, 'd'));
  v1::CoordinatorMessage relayed;
  ASSERT_TRUE(relayed.ParseFromString(Serialized(frame)));
  ASSERT_EQ(relayed.kind_case(), v1::CoordinatorMessage::kState);
  EXPECT_EQ(relayed.state().SerializeAsString(), frame.SerializeAsString());
}

TEST(StateFrameHeaderTest, AFrameWithoutDataHasNone) {
  std::optional<StateFrameHeader> header = Read(Serialized(Frame(2, 1, 5, 0, "")));
  ASSERT_TRUE(header.has_value());
  EXPECT_EQ(header->data_bytes, 0u);
  EXPECT_EQ(header->joiner_id, 2u);
}

TEST(StateFrameHeaderTest, OtherMessagesAndEncodingsAreLeftToProtobuf) {
  v1::WorkerMessage payload;
  payload.mutable_payload()->set_step(1);
  payload.mutable_payload()->set_data("abc");
  EXPECT_FALSE(Read(payload.SerializeAsString()).has_value());
  v1::WorkerMessage heartbeat;
  heartbeat.mutable_heartbeat();
  EXPECT_FALSE(Read(heartbeat.SerializeAsString()).has_value());
  EXPECT_FALSE(Read("").has_value());

  const std::string data_field =
      "\x2a\x03"
      "abc";
  // Data before a scalar field.
  EXPECT_FALSE(Read(WithFrameBytes(data_field + "\x20\x05")).has_value());
  // An unknown field.
  EXPECT_FALSE(Read(WithFrameBytes("\x30\x01" + data_field)).has_value());
  // A known field with another wire type.
  EXPECT_FALSE(Read(WithFrameBytes("\x0d\x01\x00\x00\x00" + data_field)).has_value());
  // A joiner id wider than its uint32 field.
  EXPECT_FALSE(Read(WithFrameBytes("\x08" + Varint(uint64_t{1} << 32) + data_field)).has_value());
  // An eleven-byte varint.
  EXPECT_FALSE(
      Read(WithFrameBytes("\x10" + std::string(10, '\xff') + "\x01" + data_field)).has_value());
  // Data that stops short of the message's end (a field follows it).
  EXPECT_FALSE(Read(WithFrameBytes(data_field + "\x08\x01")).has_value());
  // A frame length that does not match the message.
  std::string message = Serialized(Frame(1, 1, 3, 0, "abc"));
  EXPECT_FALSE(ReadStateFrameHeader(message, message.size() + 1).has_value());
  EXPECT_FALSE(ReadStateFrameHeader(message, message.size() - 1).has_value());
  // Length prefixes longer than protobuf's parser reads (5 bytes): an overlong 0 for the frame
  // (found by tests/fuzz/state_frame_header_fuzz) and for the data.
  EXPECT_FALSE(Read(std::string("\x2a\x80\x80\x80\x80\x80\x80\x80\x00", 9)).has_value());
  EXPECT_FALSE(
      Read(WithFrameBytes(std::string("\x2a\x83\x80\x80\x80\x80\x00", 7) + "abc")).has_value());
  // A tag longer than 5 bytes (the state field's, overlong), likewise.
  EXPECT_FALSE(Read(std::string("\xaa\x80\x80\x80\x80\x80\x80\x00\x00", 9)).has_value());
  // Scalars repeated until the header outgrows the prefix.
  std::string repeated;
  for (int i = 0; i < 40; ++i) repeated += "\x08\x01";
  EXPECT_FALSE(Read(WithFrameBytes(repeated + data_field)).has_value());
}

TEST(StateFrameHeaderTest, ARepeatedScalarKeepsItsLastValueAsProtobufDoes) {
  const std::string message = WithFrameBytes("\x08\x01\x08\x02\x2a\x01z");
  std::optional<StateFrameHeader> header = Read(message);
  ASSERT_TRUE(header.has_value());
  v1::WorkerMessage parsed;
  ASSERT_TRUE(parsed.ParseFromString(message));
  EXPECT_EQ(header->joiner_id, parsed.state().joiner_id());
  EXPECT_EQ(header->joiner_id, 2u);
}

// Whenever the header reader accepts mutated bytes, protobuf parses them to the same fields.
TEST(StateFrameHeaderTest, AgreesWithProtobufOnMutatedMessages) {
  std::mt19937_64 random(17);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string message = Serialized(
        Frame(static_cast<uint32_t>(random() % 1000), static_cast<int64_t>(random() % 100000) - 10,
              random() % 5000, random() % 5000, std::string(random() % 40, 'q')));
    const int mutations = 1 + static_cast<int>(random() % 3);
    for (int m = 0; m < mutations && !message.empty(); ++m) {
      const size_t at = random() % std::min<size_t>(message.size(), 24);
      switch (random() % 3) {
        case 0:
          message[at] = static_cast<char>(random());
          break;
        case 1:
          message.erase(at, 1);
          break;
        default:
          message.insert(at, 1, static_cast<char>(random()));
      }
    }
    std::optional<StateFrameHeader> header = Read(message);
    if (!header.has_value()) continue;
    ++accepted;
    v1::WorkerMessage parsed;
    ASSERT_TRUE(parsed.ParseFromString(message)) << "iteration " << i;
    ASSERT_EQ(parsed.kind_case(), v1::WorkerMessage::kState) << "iteration " << i;
    ExpectHeaderOf(parsed.state(), *header);
  }
  EXPECT_GT(accepted, 100);  // the mutations leave many messages valid
}

}  // namespace
}  // namespace demod
