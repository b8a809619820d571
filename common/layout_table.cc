#include "common/layout_table.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace demod {

absl::StatusOr<LayoutTable> MakeLayoutTable(const std::vector<TensorShape>& tensors,
                                            int64_t target_chunk, int64_t topk) {
  LayoutTable table;
  table.reserve(tensors.size());
  absl::flat_hash_set<std::string> seen;
  for (const TensorShape& t : tensors) {
    if (t.name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor #", table.size(), " has an empty name"));
    }
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", t.name, "'"));
    }
    absl::StatusOr<ChunkLayout> layout = MakeChunkLayout(t.shape, target_chunk, topk);
    if (!layout.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': ", layout.status().message()));
    }
    table.push_back({t.name, *std::move(layout)});
  }
  return table;
}

absl::Status CheckSameLayoutTable(const LayoutTable& run, const LayoutTable& candidate) {
  const size_t common = std::min(run.size(), candidate.size());
  for (size_t i = 0; i < common; ++i) {
    const NamedLayout& want = run[i];
    const NamedLayout& got = candidate[i];
    if (want.name != got.name) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor #", i, " is '", got.name, "', the run's is '", want.name, "'"));
    }
    if (!(want.layout == got.layout)) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor '", got.name, "': shape ", ShapeToString(got.layout.matrix_shape),
                       " topk ", got.layout.topk, " differs from the run's ",
                       ShapeToString(want.layout.matrix_shape), " topk ", want.layout.topk));
    }
  }
  if (run.size() != candidate.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("table has ", candidate.size(), " tensors, the run's has ", run.size()));
  }
  return absl::OkStatus();
}

int64_t TotalElements(const LayoutTable& table) {
  int64_t n = 0;
  for (const NamedLayout& t : table) n += t.layout.num_elements();
  return n;
}

}  // namespace demod
