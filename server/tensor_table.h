// The run's tensor table as workers announce it in their Join (proto TensorSpec): validated
// when it arrives, and compared with the run's, which the first worker's table defines.
#ifndef DEMOD_SERVER_TENSOR_TABLE_H_
#define DEMOD_SERVER_TENSOR_TABLE_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/layout_table.h"
#include "demod/v1/coordinator.pb.h"

namespace demod {

using TensorSpecs = google::protobuf::RepeatedPtrField<v1::TensorSpec>;

// The shapes of a join's tensors. INVALID_ARGUMENT naming the tensor for no tensors, an empty
// or repeated name, a dimension < 1, or an unspecified dtype.
absl::StatusOr<std::vector<TensorShape>> ValidateTensorSpecs(const TensorSpecs& specs);

// OK when `candidate` equals `run`; else FAILED_PRECONDITION naming the first differing tensor
// and how it differs.
absl::Status CheckSameTensorSpecs(const TensorSpecs& run, const TensorSpecs& candidate);

}  // namespace demod

#endif  // DEMOD_SERVER_TENSOR_TABLE_H_
