#include "common/crc32c.h"

#include <string>

#include "gtest/gtest.h"

namespace demod {
namespace {

// The byte-at-a-time definition, to check the sliced implementation against.
uint32_t BitwiseCrc32c(absl::string_view data) {
  uint32_t crc = 0xFFFFFFFF;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? 0x82F63B78 : 0);
  }
  return ~crc;
}

TEST(Crc32cTest, StandardCheckValue) { EXPECT_EQ(Crc32c("123456789"), 0xE3069283u); }

TEST(Crc32cTest, KnownVectorsFromRfc3720) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
}

TEST(Crc32cTest, MatchesBitwiseDefinitionForEveryLengthAndAlignment) {
  std::string data(300, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  for (size_t start = 0; start < 8; ++start) {
    for (size_t n = 0; start + n <= data.size(); n += 13) {
      const absl::string_view piece = absl::string_view(data).substr(start, n);
      ASSERT_EQ(Crc32c(piece), BitwiseCrc32c(piece)) << start << " " << n;
      ASSERT_EQ(Crc32cExtendPortable(0, piece), BitwiseCrc32c(piece)) << start << " " << n;
    }
  }
}

TEST(Crc32cTest, ExtendEqualsWholeComputation) {
  const std::string data = "hello, decoupled momentum";
  for (size_t split = 0; split <= data.size(); ++split) {
    const absl::string_view whole(data);
    EXPECT_EQ(Crc32cExtend(Crc32c(whole.substr(0, split)), whole.substr(split)), Crc32c(whole));
  }
  EXPECT_EQ(Crc32cExtend(0, data), Crc32c(data));
}

TEST(Crc32cTest, DetectsASingleFlippedBit) {
  std::string data = "the quick brown fox";
  const uint32_t original = Crc32c(data);
  data[5] ^= 0x10;
  EXPECT_NE(Crc32c(data), original);
}

}  // namespace
}  // namespace demod
