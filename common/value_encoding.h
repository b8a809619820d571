// How the values of selected DCT coefficients travel on the wire.
//
//   kFloat32   4 bytes, exact
//   kBFloat16  2 bytes, round-to-nearest-even from float32
//   kFloat16   2 bytes, IEEE half, round-to-nearest-even (overflow becomes an error upstream,
//              never infinity: see QuantizeValue)
//   kSign      1 bit (packed 8 per byte, least significant bit first); decodes as +1 / -1
//
// Pure functions; thread-safe.
#ifndef DEMOD_COMMON_VALUE_ENCODING_H_
#define DEMOD_COMMON_VALUE_ENCODING_H_

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
};

// "f32", "bf16", "f16", "sign".
absl::string_view ValueEncodingName(ValueEncoding encoding);
absl::StatusOr<ValueEncoding> ParseValueEncoding(absl::string_view name);
bool IsValidValueEncoding(uint8_t raw);

// Wire bytes for n >= 0 values (kSign rounds up to whole bytes).
int64_t EncodedValueBytes(ValueEncoding encoding, int64_t n);

// Plain IEEE-style conversions: round-to-nearest-even, overflow becomes infinity, NaN stays NaN
// (quieted, sign kept), half subnormals are produced and read exactly.
uint16_t FloatToBFloat16(float value);
// Exact: bf16 is float32's upper half. Inline: decoders call it for every value.
inline float BFloat16ToFloat(uint16_t bits) {
  return absl::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);

// As above, except that a finite value that would round to infinity becomes the largest finite
// value of the same sign (bf16 0x7F7F = 3.3895e38, half 0x7BFF = 65504). Infinity and NaN pass
// through. These are what the payload encoder writes.
uint16_t FloatToBFloat16Saturating(float value);
uint16_t FloatToHalfSaturating(float value);

// The kSign bit for `value`: 0 for value >= 0 (including -0), 1 otherwise (negative or NaN).
// A 0 bit decodes as +1, a 1 bit as -1.
inline bool SignBit(float value) { return !(value >= 0.0f); }

// The value a receiver decodes after `value` went through `encoding`: the rounding of bf16 /
// f16, +1 / -1 for kSign (zero counts as +1). bf16 and f16 values beyond their range saturate
// (f16 to +-65504) so a finite input never decodes as infinity.
float QuantizeValue(ValueEncoding encoding, float value);

}  // namespace demod

#endif  // DEMOD_COMMON_VALUE_ENCODING_H_
