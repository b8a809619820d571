#include "server/tensor_table.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace demod {
namespace {

std::string Shape(const v1::TensorSpec& spec) {
  return absl::StrCat("[", absl::StrJoin(spec.shape(), ", "), "]");
}

}  // namespace

absl::StatusOr<std::vector<TensorShape>> ValidateTensorSpecs(const TensorSpecs& specs) {
  if (specs.empty()) return absl::InvalidArgumentError("the tensor table is empty");
  std::vector<TensorShape> shapes;
  absl::flat_hash_set<std::string> names;
  for (int i = 0; i < specs.size(); ++i) {
    const v1::TensorSpec& spec = specs[i];
    if (spec.name().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor #", i, " has an empty name"));
    }
    if (!names.insert(spec.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name(), "' appears twice"));
    }
    if (std::any_of(spec.shape().begin(), spec.shape().end(), [](int64_t d) { return d < 1; })) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", spec.name(), "' has shape ", Shape(spec), "; every dimension must be >= 1"));
    }
    if (spec.dtype() == v1::DTYPE_UNSPECIFIED || !v1::DType_IsValid(spec.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name(), "' has no valid dtype"));
    }
    shapes.push_back({spec.name(), {spec.shape().begin(), spec.shape().end()}});
  }
  return shapes;
}

absl::Status CheckSameTensorSpecs(const TensorSpecs& run, const TensorSpecs& candidate) {
  const int common = std::min(run.size(), candidate.size());
  for (int i = 0; i < common; ++i) {
    const v1::TensorSpec& want = run[i];
    const v1::TensorSpec& got = candidate[i];
    if (want.name() != got.name()) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor #", i, " is '", got.name(), "', the run's is '", want.name(), "'"));
    }
    if (!std::equal(want.shape().begin(), want.shape().end(), got.shape().begin(),
                    got.shape().end())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tensor '", got.name(), "' has shape ", Shape(got), ", the run's is ", Shape(want)));
    }
    if (want.dtype() != got.dtype()) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor '", got.name(), "' has dtype ", v1::DType_Name(got.dtype()),
                       ", the run's is ", v1::DType_Name(want.dtype())));
    }
  }
  if (run.size() != candidate.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the table has ", candidate.size(), " tensors, the run's has ", run.size()));
  }
  return absl::OkStatus();
}

}  // namespace demod
