// The run's tensor table as the codec sees it: names and chunk layouts in table order.
// Every worker of a run must have the same table; the first one to join defines it.
#ifndef DEMOD_COMMON_LAYOUT_TABLE_H_
#define DEMOD_COMMON_LAYOUT_TABLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sparse_payload.h"

namespace demod {

struct TensorShape {
  std::string name;
  std::vector<int64_t> shape;
};

// Layouts for `tensors` under one chunk target and topk. INVALID_ARGUMENT naming the tensor
// for an empty or duplicate name or a bad shape.
absl::StatusOr<LayoutTable> MakeLayoutTable(const std::vector<TensorShape>& tensors,
                                            int64_t target_chunk, int64_t topk);

// OK when `candidate` equals `run`; else FAILED_PRECONDITION naming the first difference.
absl::Status CheckSameLayoutTable(const LayoutTable& run, const LayoutTable& candidate);

// Sum of elements over the table: what a dense exchange would move, in values.
int64_t TotalElements(const LayoutTable& table);

}  // namespace demod

#endif  // DEMOD_COMMON_LAYOUT_TABLE_H_
