#include "common/value_encoding.h"

#include <cmath>
#include <cstring>

#include "absl/base/casts.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace demod {
namespace {

uint32_t FloatBits(float value) { return absl::bit_cast<uint32_t>(value); }
float BitsToFloat(uint32_t bits) { return absl::bit_cast<float>(bits); }

constexpr uint16_t kHalfMaxFinite = 0x7BFF;
constexpr uint16_t kHalfInfinity = 0x7C00;

}  // namespace

absl::string_view ValueEncodingName(ValueEncoding encoding) {
  switch (encoding) {
    case ValueEncoding::kFloat32:
      return "f32";
    case ValueEncoding::kBFloat16:
      return "bf16";
    case ValueEncoding::kFloat16:
      return "f16";
    case ValueEncoding::kSign:
      return "sign";
    case ValueEncoding::kSignMean:
      return "sign-mean";
  }
  return "invalid";
}

absl::StatusOr<ValueEncoding> ParseValueEncoding(absl::string_view name) {
  for (ValueEncoding encoding : {ValueEncoding::kFloat32, ValueEncoding::kBFloat16,
                                 ValueEncoding::kFloat16, ValueEncoding::kSign}) {
    if (name == ValueEncodingName(encoding)) return encoding;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown value encoding '", name, "'; valid: f32, bf16, f16, sign"));
}

bool IsValidValueEncoding(uint8_t raw) { return raw <= static_cast<uint8_t>(ValueEncoding::kSign); }

int64_t EncodedValueBytes(ValueEncoding encoding, int64_t n) {
  switch (encoding) {
    case ValueEncoding::kFloat32:
      return 4 * n;
    case ValueEncoding::kBFloat16:
    case ValueEncoding::kFloat16:
      return 2 * n;
    case ValueEncoding::kSign:
      return (n + 7) / 8;
    case ValueEncoding::kSignMean:
      return 0;
  }
  return 0;
}

uint16_t FloatToHalf(float value) {
  const uint32_t bits = FloatBits(value);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t magnitude = bits & 0x7FFFFFFF;

  if (magnitude >= 0x7F800000) {  // infinity or NaN
    if (magnitude == 0x7F800000) return sign | kHalfInfinity;
    return static_cast<uint16_t>(sign | 0x7E00 | ((magnitude >> 13) & 0x03FF));
  }
  // 65520 is halfway between 65504 (odd mantissa) and 65536: ties go to even, i.e. infinity.
  if (magnitude >= 0x477FF000) return sign | kHalfInfinity;

  if (magnitude < 0x38800000) {
    // Below 2^-14, the smallest normal half: the result is a subnormal m * 2^-24 (or zero).
    const int exponent = static_cast<int>(magnitude >> 23);
    const int shift = 126 - exponent;  // value / 2^-24 == mantissa >> shift
    if (shift > 24) return sign;       // below 2^-25: rounds to zero
    const uint32_t mantissa = (magnitude & 0x007FFFFF) | 0x00800000;
    uint32_t half = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }

  // Normal: rebias the exponent (127 -> 15) and drop 13 mantissa bits, rounding to nearest
  // even; a carry into the exponent is the right answer.
  uint32_t half = (magnitude - 0x38000000) >> 13;
  const uint32_t remainder = magnitude & 0x1FFF;
  if (remainder > 0x1000 || (remainder == 0x1000 && (half & 1))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1F;
  const uint32_t mantissa = bits & 0x03FF;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return BitsToFloat(sign | 0x7F800000 | (mantissa << 13));
  return BitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t FloatToHalfSaturating(float value) {
  const uint16_t bits = FloatToHalf(value);
  if ((bits & 0x7FFF) == kHalfInfinity && std::isfinite(value)) {
    return static_cast<uint16_t>((bits & 0x8000) | kHalfMaxFinite);
  }
  return bits;
}

float QuantizeValue(ValueEncoding encoding, float value) {
  switch (encoding) {
    case ValueEncoding::kFloat32:
      return value;
    case ValueEncoding::kBFloat16:
      return BFloat16ToFloat(FloatToBFloat16Saturating(value));
    case ValueEncoding::kFloat16:
      return HalfToFloat(FloatToHalfSaturating(value));
    case ValueEncoding::kSign:
      return SignBit(value) ? -1.0f : 1.0f;
    case ValueEncoding::kSignMean:
      return value;
  }
  return value;
}

void QuantizeValues(ValueEncoding encoding, float* values, size_t n) {
  switch (encoding) {
    case ValueEncoding::kFloat32:
    case ValueEncoding::kSignMean:
      return;
    case ValueEncoding::kBFloat16:
      for (size_t i = 0; i < n; ++i) {
        values[i] = BFloat16ToFloat(FloatToBFloat16Saturating(values[i]));
      }
      return;
    case ValueEncoding::kFloat16:
    case ValueEncoding::kSign:
      for (size_t i = 0; i < n; ++i) values[i] = QuantizeValue(encoding, values[i]);
      return;
  }
}

}  // namespace demod
