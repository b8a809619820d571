#include "common/value_encoding.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/base/casts.h"
#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

float FromBits(uint32_t bits) { return absl::bit_cast<float>(bits); }
uint32_t Bits(float value) { return absl::bit_cast<uint32_t>(value); }

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(ValueEncodingNameTest, NamesRoundTrip) {
  for (ValueEncoding e : {ValueEncoding::kFloat32, ValueEncoding::kBFloat16,
                          ValueEncoding::kFloat16, ValueEncoding::kSign}) {
    absl::StatusOr<ValueEncoding> parsed = ParseValueEncoding(ValueEncodingName(e));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, e);
  }
  EXPECT_EQ(ValueEncodingName(ValueEncoding::kFloat32), "f32");
  EXPECT_EQ(ValueEncodingName(ValueEncoding::kBFloat16), "bf16");
  EXPECT_EQ(ValueEncodingName(ValueEncoding::kFloat16), "f16");
  EXPECT_EQ(ValueEncodingName(ValueEncoding::kSign), "sign");
  // Aggregates only: not a run's encoding, nor a payload's.
  EXPECT_EQ(ValueEncodingName(ValueEncoding::kSignMean), "sign-mean");
  EXPECT_FALSE(ParseValueEncoding("sign-mean").ok());
  EXPECT_FALSE(IsValidValueEncoding(static_cast<uint8_t>(ValueEncoding::kSignMean)));
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSignMean, 0.25f), 0.25f);
  EXPECT_EQ(AggregateEncoding(ValueEncoding::kSign), ValueEncoding::kSignMean);
}

TEST(ValueEncodingNameTest, ParseErrorListsTheValidNames) {
  absl::StatusOr<ValueEncoding> parsed = ParseValueEncoding("fp16");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("'fp16'"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("f32, bf16, f16, sign"));
  EXPECT_FALSE(ParseValueEncoding("F32").ok());
  EXPECT_FALSE(ParseValueEncoding("").ok());
}

TEST(ValueEncodingTest, ValidRawValues) {
  for (int raw = 0; raw < 256; ++raw) {
    EXPECT_EQ(IsValidValueEncoding(static_cast<uint8_t>(raw)), raw <= 3) << raw;
  }
}

TEST(ValueEncodingTest, EncodedValueBytes) {
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kFloat32, 5), 20);
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kBFloat16, 5), 10);
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kFloat16, 5), 10);
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kSign, 0), 0);
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kSign, 1), 1);
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kSign, 8), 1);
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kSign, 9), 2);
  EXPECT_EQ(EncodedValueBytes(ValueEncoding::kSign, 32), 4);
}

TEST(BFloat16Test, ExactValuesRoundTrip) {
  for (float v : {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 3.0f, -2.5f, 1024.0f, std::ldexp(1.5f, -100),
                  kInf, -kInf}) {
    EXPECT_EQ(Bits(BFloat16ToFloat(FloatToBFloat16(v))), Bits(v)) << v;
  }
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(-2.0f), 0xC000);
  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
}

TEST(BFloat16Test, RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F808000)), 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F818000)), 0x3F82);
  // Just above and below the halfway point.
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F808001)), 0x3F81);
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3F807FFF)), 0x3F80);
  // A carry out of the mantissa bumps the exponent.
  EXPECT_EQ(FloatToBFloat16(FromBits(0x3FFFFFFF)), 0x4000);
  // Negative values round by magnitude.
  EXPECT_EQ(FloatToBFloat16(FromBits(0xBF808001)), 0xBF81);
}

TEST(BFloat16Test, NaNStaysNaNAndOverflowBecomesInfinity) {
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(kNaN))));
  // A NaN whose payload lives only in the low 16 bits would truncate to infinity.
  const float low_payload_nan = FromBits(0x7F800001);
  ASSERT_TRUE(std::isnan(low_payload_nan));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(low_payload_nan))));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(-low_payload_nan))));
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(FloatToBFloat16(-std::numeric_limits<float>::max()), 0xFF80);
}

TEST(BFloat16Test, SaturatingKeepsFiniteValuesFinite) {
  EXPECT_EQ(FloatToBFloat16Saturating(std::numeric_limits<float>::max()), 0x7F7F);
  EXPECT_EQ(FloatToBFloat16Saturating(-std::numeric_limits<float>::max()), 0xFF7F);
  EXPECT_EQ(FloatToBFloat16Saturating(kInf), 0x7F80);
  EXPECT_EQ(FloatToBFloat16Saturating(1.0f), 0x3F80);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16Saturating(kNaN))));
}

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(Bits(HalfToFloat(0x8000)), Bits(-0.0f));
}

TEST(HalfTest, EveryHalfRoundTripsExactly) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
      EXPECT_EQ(FloatToHalf(f) & 0x8000, h & 0x8000) << h;
    } else {
      EXPECT_EQ(FloatToHalf(f), h) << h;
    }
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  // Between 1 (0x3C00) and 1 + 2^-10 (0x3C01): the midpoint ties to 1, above goes up.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3C01);
  // Between 0x3C01 (odd) and 0x3C02: the midpoint ties up to the even one.
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  // Rounding carries into the exponent: just under 2 rounds to 2.
  EXPECT_EQ(FloatToHalf(std::nextafter(2.0f, 0.0f)), 0x4000);
}

TEST(HalfTest, Subnormals) {
  const float smallest = std::ldexp(1.0f, -24);  // 0x0001
  EXPECT_EQ(FloatToHalf(smallest), 0x0001);
  EXPECT_EQ(HalfToFloat(0x0001), smallest);
  EXPECT_EQ(FloatToHalf(-smallest), 0x8001);
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.0f, -24)), 0x03FF);
  // Half the smallest subnormal ties to even (zero); anything above rounds up to it.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(FloatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -26)), 0x0000);
  // 1.5 and 2.5 units: ties to 2 both times.
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);
  EXPECT_EQ(FloatToHalf(std::ldexp(5.0f, -25)), 0x0002);
  // The largest subnormal plus half a unit ties to the (even) smallest normal.
  EXPECT_EQ(FloatToHalf(std::ldexp(2047.0f, -25)), 0x0400);
  // Float subnormals and tiny normals become signed zero.
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::min()), 0x8000);
}

TEST(HalfTest, OverflowInfinityAndNaN) {
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);  // below the midpoint to 65536
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // the midpoint ties to even: infinity
  EXPECT_EQ(FloatToHalf(1e10f), 0x7C00);
  EXPECT_EQ(FloatToHalf(-1e10f), 0xFC00);
  EXPECT_EQ(FloatToHalf(kInf), 0x7C00);
  EXPECT_EQ(FloatToHalf(-kInf), 0xFC00);
  EXPECT_EQ(HalfToFloat(0x7C00), kInf);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(kNaN))));
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(FromBits(0x7F800001)))));
}

TEST(HalfTest, SaturatingKeepsFiniteValuesFinite) {
  EXPECT_EQ(FloatToHalfSaturating(65520.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalfSaturating(1e30f), 0x7BFF);
  EXPECT_EQ(FloatToHalfSaturating(-1e30f), 0xFBFF);
  EXPECT_EQ(FloatToHalfSaturating(kInf), 0x7C00);
  EXPECT_EQ(FloatToHalfSaturating(0.25f), FloatToHalf(0.25f));
}

TEST(QuantizeValueTest, Float32IsExact) {
  for (float v : {0.1f, -3.75e-12f, 1e30f, -0.0f}) {
    EXPECT_EQ(Bits(QuantizeValue(ValueEncoding::kFloat32, v)), Bits(v));
  }
}

TEST(QuantizeValueTest, MatchesTheWireConversions) {
  for (float v : {0.1f, -3.75e-5f, 123.456f, 1e-7f, -65504.0f, 7e4f, -1e38f, 3.4e38f}) {
    EXPECT_EQ(QuantizeValue(ValueEncoding::kBFloat16, v),
              BFloat16ToFloat(FloatToBFloat16Saturating(v)))
        << v;
    EXPECT_EQ(QuantizeValue(ValueEncoding::kFloat16, v), HalfToFloat(FloatToHalfSaturating(v)))
        << v;
  }
  EXPECT_EQ(QuantizeValue(ValueEncoding::kBFloat16, 1.0f + std::ldexp(1.0f, -8)), 1.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kFloat16, 0.1f), HalfToFloat(0x2E66));
}

TEST(QuantizeValueTest, HalfSaturatesInsteadOfOverflowing) {
  EXPECT_EQ(QuantizeValue(ValueEncoding::kFloat16, 1e6f), 65504.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kFloat16, -1e6f), -65504.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kFloat16, 65520.0f), 65504.0f);
  EXPECT_TRUE(
      std::isfinite(QuantizeValue(ValueEncoding::kBFloat16, std::numeric_limits<float>::max())));
}

TEST(QuantizeValueTest, SignOfZeroIsPlusOne) {
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSign, 0.0f), 1.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSign, -0.0f), 1.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSign, 1e-30f), 1.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSign, 42.0f), 1.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSign, -1e-30f), -1.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSign, -42.0f), -1.0f);
  EXPECT_EQ(QuantizeValue(ValueEncoding::kSign, -kInf), -1.0f);
  EXPECT_FALSE(SignBit(0.0f));
  EXPECT_TRUE(SignBit(-1.0f));
}

}  // namespace
}  // namespace demod
