#include "common/byte_coding.h"

#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace demod {
namespace {

TEST(ByteCodingTest, PutWritesLittleEndian) {
  std::string s;
  PutU8(&s, 0xAB);
  PutU16(&s, 0x1234);
  PutU32(&s, 0xDEADBEEF);
  PutU64(&s, 0x0102030405060708ULL);
  PutF32(&s, 1.0f);  // 0x3F800000
  const std::string expected(
      "\xAB"
      "\x34\x12"
      "\xEF\xBE\xAD\xDE"
      "\x08\x07\x06\x05\x04\x03\x02\x01"
      "\x00\x00\x80\x3F",
      1 + 2 + 4 + 8 + 4);
  EXPECT_EQ(s, expected);
}

TEST(ByteCodingTest, EncodeDecodeRoundTripsAtUnalignedOffsets) {
  char buf[32] = {};
  for (int offset = 0; offset < 8; ++offset) {
    EncodeU16(buf + offset, 0xFFFE);
    EXPECT_EQ(DecodeU16(buf + offset), 0xFFFE);
    EncodeU32(buf + offset, 0x80000001u);
    EXPECT_EQ(DecodeU32(buf + offset), 0x80000001u);
    EncodeU64(buf + offset, 0xFEDCBA9876543210ULL);
    EXPECT_EQ(DecodeU64(buf + offset), 0xFEDCBA9876543210ULL);
    EncodeF32(buf + offset, -3.5f);
    EXPECT_EQ(DecodeF32(buf + offset), -3.5f);
  }
  EncodeF32(buf, std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(DecodeF32(buf)));
}

TEST(ByteReaderTest, ReadsWhatPutWrote) {
  std::string s;
  PutU8(&s, 7);
  PutU16(&s, 65535);
  PutU32(&s, 123456789);
  PutU64(&s, std::numeric_limits<uint64_t>::max());
  PutF32(&s, 0.25f);
  s += "tail";
  ByteReader reader(s);
  uint8_t u8;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  float f32;
  absl::string_view rest;
  ASSERT_TRUE(reader.ReadU8(&u8));
  ASSERT_TRUE(reader.ReadU16(&u16));
  ASSERT_TRUE(reader.ReadU32(&u32));
  ASSERT_TRUE(reader.ReadU64(&u64));
  ASSERT_TRUE(reader.ReadF32(&f32));
  EXPECT_EQ(reader.remaining(), 4u);
  ASSERT_TRUE(reader.ReadBytes(4, &rest));
  EXPECT_EQ(u8, 7);
  EXPECT_EQ(u16, 65535);
  EXPECT_EQ(u32, 123456789u);
  EXPECT_EQ(u64, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f32, 0.25f);
  EXPECT_EQ(rest, "tail");
  EXPECT_TRUE(reader.empty());
}

TEST(ByteReaderTest, ShortReadsFailAndConsumeNothing) {
  const std::string s("\x01\x02\x03", 3);
  ByteReader reader(s);
  uint32_t u32 = 99;
  uint64_t u64 = 99;
  float f32 = 99;
  absl::string_view bytes;
  EXPECT_FALSE(reader.ReadU32(&u32));
  EXPECT_FALSE(reader.ReadU64(&u64));
  EXPECT_FALSE(reader.ReadF32(&f32));
  EXPECT_FALSE(reader.ReadBytes(4, &bytes));
  EXPECT_EQ(u32, 99u);
  EXPECT_EQ(reader.remaining(), 3u);
  uint16_t u16;
  ASSERT_TRUE(reader.ReadU16(&u16));
  EXPECT_EQ(u16, 0x0201);
  EXPECT_FALSE(reader.ReadU16(&u16));
  uint8_t u8;
  ASSERT_TRUE(reader.ReadU8(&u8));
  EXPECT_EQ(u8, 3);
  EXPECT_FALSE(reader.ReadU8(&u8));
  EXPECT_TRUE(reader.ReadBytes(0, &bytes));
  EXPECT_TRUE(bytes.empty());
}

}  // namespace
}  // namespace demod
