#include "common/sign_mean.h"

#include <algorithm>
#include <array>
#include <memory>
#include <mutex>

namespace demod {

SignMeanTable::SignMeanTable(uint32_t contributors) {
  // (plus - minus) / c for every c <= P and plus + minus = c. Equal fractions (1/2 and 2/4) give
  // the same float, the division being correctly rounded, and become one value.
  for (int64_t c = 1; c <= contributors; ++c) {
    for (int64_t plus = 0; plus <= c; ++plus) {
      values_.push_back(static_cast<float>(2 * plus - c) / static_cast<float>(c));
    }
  }
  std::sort(values_.begin(), values_.end());
  values_.erase(std::unique(values_.begin(), values_.end()), values_.end());
  while ((size_t{1} << bits_) < values_.size()) ++bits_;
}

const SignMeanTable& SignMeanTable::For(uint32_t contributors) {
  static std::array<std::once_flag, kMaxContributors + 1> once;
  static std::array<std::unique_ptr<SignMeanTable>, kMaxContributors + 1> tables;
  std::call_once(once[contributors],
                 [contributors] { tables[contributors].reset(new SignMeanTable(contributors)); });
  return *tables[contributors];
}

}  // namespace demod
