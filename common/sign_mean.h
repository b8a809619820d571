// The means an equally weighted aggregate of sign payloads can hold, and their codes on the
// wire (docs/wire-format.md, "Sign means").
//
// Every value a contributor sends is +1 or -1, so the mean of the c values sent for one
// coefficient (1 <= c <= P, the step's contributors) is (plus - minus) / c: one of a few
// fractions. Rather than a 4-byte float, each travels as its code, the position of its value
// in the ascending list of every such fraction for P, in ceil(log2(list size)) bits: 1 bit for
// one contributor, 3 bits for 4, 5 for 8, 9 for 32.
//
// A value is float(d) / float(c) for the fraction d / c: one correctly rounded division of the
// exact fraction, which is what the aggregation's f32 mean of the same signs gives (their sum
// is an exact integer), whatever the fraction's terms. Both sides hold the same floats.
//
// Thread-safe. A table is built on first use for its contributor count and kept.
#ifndef DEMOD_COMMON_SIGN_MEAN_H_
#define DEMOD_COMMON_SIGN_MEAN_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/casts.h"
namespace demod {

class SignMeanTable {
 public:
  // Beyond it aggregates of signs travel as f32 (the table would have about 0.6 P^2 values).
  static constexpr uint32_t kMaxContributors = 256;

  // The table for `contributors`, in [1, kMaxContributors].
  static const SignMeanTable& For(uint32_t contributors);

  size_t size() const { return values_.size(); }
  int bits() const { return bits_; }  // per value, >= 1
  // `code` < size().
  float value(uint32_t code) const { return values_[code]; }
  // The code of `value`, when it is one of the table's, bit for bit (-0 is not: a mean of
  // signs that cancel is +0).
  std::optional<uint32_t> code(float value) const {
    // The last value not above `value` (or the first), by a search whose steps are selects, not
    // branches: signs are random, and a mispredicted branch per value would cost more than the
    // rest of the aggregation. -0 finds +0 and NaN the first value; both then fail the
    // comparison of bits.
    const float* found = values_.data();
    for (size_t n = values_.size(); n > 1;) {
      const size_t half = n / 2;
      found = found[half] <= value ? found + half : found;
      n -= half;
    }
    if (absl::bit_cast<uint32_t>(*found) != absl::bit_cast<uint32_t>(value)) return std::nullopt;
    return static_cast<uint32_t>(found - values_.data());
  }
  // Bytes of n codes, packed.
  int64_t EncodedBytes(int64_t n) const { return (n * bits_ + 7) / 8; }

 private:
  explicit SignMeanTable(uint32_t contributors);

  std::vector<float> values_;  // ascending: a value's code is its position
  int bits_ = 1;
};

}  // namespace demod

#endif  // DEMOD_COMMON_SIGN_MEAN_H_
