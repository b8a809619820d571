// How the values of selected DCT coefficients travel on the wire.
//
//   kFloat32   4 bytes, exact
//   kBFloat16  2 bytes, round-to-nearest-even from float32
//   kFloat16   2 bytes, IEEE half, round-to-nearest-even (overflow becomes an error upstream,
//              never infinity: see QuantizeValue)
//   kSign      1 bit (packed 8 per byte, least significant bit first); decodes as +1 / -1
//   kSignMean  aggregates only: the mean of the contributors' signs, as its code among the
//              means P contributors can give (common/sign_mean.h), in a few bits
//
// Pure functions; thread-safe.
#ifndef DEMOD_COMMON_VALUE_ENCODING_H_
#define DEMOD_COMMON_VALUE_ENCODING_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/base/casts.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace demod {

enum class ValueEncoding : uint8_t {
  kFloat32 = 0,
  kBFloat16 = 1,
  kFloat16 = 2,
  kSign = 3,
  kSignMean = 4,  // aggregates of kSign payloads only
};

// "f32", "bf16", "f16", "sign", "sign-mean".
absl::string_view ValueEncodingName(ValueEncoding encoding);
// A payload's encoding (not kSignMean), by name.
absl::StatusOr<ValueEncoding> ParseValueEncoding(absl::string_view name);
// Whether `raw` is a payload's encoding (kSignMean is not).
bool IsValidValueEncoding(uint8_t raw);

// Wire bytes for n >= 0 values (kSign rounds up to whole bytes). 0 for kSignMean, whose size
// depends on the contributors (SignMeanTable::EncodedBytes).
int64_t EncodedValueBytes(ValueEncoding encoding, int64_t n);

// Plain IEEE-style conversions: round-to-nearest-even, overflow becomes infinity, NaN stays NaN
// (quieted, sign kept), half subnormals are produced and read exactly.
// (The bf16 conversions are inline: codecs call them for every value.)
inline uint16_t FloatToBFloat16(float value) {
  const auto bits = absl::bit_cast<uint32_t>(value);
  if (std::isnan(value)) {
    // Truncating could clear every mantissa bit and turn the NaN into infinity; setting the
    // quiet bit keeps it a NaN.
    return static_cast<uint16_t>((bits >> 16) | 0x0040);
  }
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; a carry out of the
  // mantissa correctly bumps the exponent (up to infinity).
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}
// Exact: bf16 is float32's upper half.
inline float BFloat16ToFloat(uint16_t bits) {
  return absl::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);

// As above, except that a finite value that would round to infinity becomes the largest finite
// value of the same sign (bf16 0x7F7F = 3.3895e38, half 0x7BFF = 65504). Infinity and NaN pass
// through. These are what the payload encoder writes.
inline uint16_t FloatToBFloat16Saturating(float value) {
  constexpr uint16_t kInfinity = 0x7F80, kMaxFinite = 0x7F7F;
  const uint16_t bits = FloatToBFloat16(value);
  if ((bits & 0x7FFF) == kInfinity && std::isfinite(value)) {
    return static_cast<uint16_t>((bits & 0x8000) | kMaxFinite);
  }
  return bits;
}
uint16_t FloatToHalfSaturating(float value);

// The kSign bit for `value`: 0 for value >= 0 (including -0), 1 otherwise (negative or NaN).
// A 0 bit decodes as +1, a 1 bit as -1.
inline bool SignBit(float value) { return !(value >= 0.0f); }

// The encoding of a step's aggregate values given its payloads' (when they all share one):
// bf16 and f16 means are rounded to the payloads' precision and travel in half the bytes; the
// means of f32 values stay f32, and those of signs travel as sign means (exact, in a few bits;
// as f32 when there are more contributors than SignMeanTable holds, or when they are weighted).
inline ValueEncoding AggregateEncoding(ValueEncoding payloads) {
  switch (payloads) {
    case ValueEncoding::kBFloat16:
    case ValueEncoding::kFloat16:
      return payloads;
    case ValueEncoding::kSign:
      return ValueEncoding::kSignMean;
    case ValueEncoding::kFloat32:
    case ValueEncoding::kSignMean:
      break;
  }
  return ValueEncoding::kFloat32;
}

// The value a receiver decodes after `value` went through `encoding`: the rounding of bf16 /
// f16, +1 / -1 for kSign (zero counts as +1), the value itself for kSignMean (which carries
// exactly the means it can carry, and no other). bf16 and f16 values beyond their range saturate
// (f16 to +-65504) so a finite input never decodes as infinity.
float QuantizeValue(ValueEncoding encoding, float value);
// QuantizeValue over n values, in place.
void QuantizeValues(ValueEncoding encoding, float* values, size_t n);

}  // namespace demod

#endif  // DEMOD_COMMON_VALUE_ENCODING_H_
