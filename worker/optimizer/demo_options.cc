#include "worker/optimizer/demo_options.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace demod {

absl::Status DemoOptions::Validate() const {
  if (!std::isfinite(lr()) || lr() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("lr must be finite and >= 0, got ", lr()));
  }
  if (!std::isfinite(compression_decay()) || compression_decay() < 0 || compression_decay() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("compression_decay must be in [0, 1], got ", compression_decay()));
  }
  if (compression_topk() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("compression_topk must be >= 1, got ", compression_topk()));
  }
  if (compression_chunk() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("compression_chunk must be >= 1, got ", compression_chunk()));
  }
  if (!std::isfinite(weight_decay()) || weight_decay() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight_decay must be finite and >= 0, got ", weight_decay()));
  }
  return absl::OkStatus();
}

}  // namespace demod
