#include "common/chunk_layout.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace demod {

int64_t ChunkLength(int64_t dim, int64_t target) {
  // Walk the divisors of dim in increasing order; the previous divisor is remembered so the
  // answer for "first divisor above target" is the one just before it.
  int64_t previous = 0;
  for (int64_t d = 1; d <= dim; ++d) {
    if (dim % d != 0) continue;
    if (d == target) return d;
    if (d > target) return previous == 0 ? d : previous;
    previous = d;
  }
  return dim;
}

int64_t ChunkLayout::num_chunks() const {
  int64_t n = 1;
  for (int64_t g : chunk_grid) n *= g;
  return n;
}

bool operator==(const ChunkLayout& a, const ChunkLayout& b) {
  return a.matrix_shape == b.matrix_shape && a.chunk_grid == b.chunk_grid &&
         a.chunk_rows == b.chunk_rows && a.chunk_cols == b.chunk_cols && a.topk == b.topk;
}

absl::StatusOr<ChunkLayout> MakeChunkLayout(const std::vector<int64_t>& shape, int64_t target_chunk,
                                            int64_t topk) {
  if (target_chunk < 1) {
    return absl::InvalidArgumentError(absl::StrCat("chunk size must be >= 1, got ", target_chunk));
  }
  if (topk < 1) return absl::InvalidArgumentError(absl::StrCat("topk must be >= 1, got ", topk));
  for (int64_t d : shape) {
    if (d < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("every dimension must be >= 1, got shape ", ShapeToString(shape)));
    }
  }
  ChunkLayout layout;
  if (shape.empty()) {
    layout.matrix_shape = {1};
  } else if (shape.size() == 1) {
    layout.matrix_shape = shape;
  } else {
    int64_t cols = 1;
    for (size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
    layout.matrix_shape = {shape[0], cols};
  }
  if (layout.is_2d()) {
    layout.chunk_rows = ChunkLength(layout.matrix_shape[0], target_chunk);
    layout.chunk_cols = ChunkLength(layout.matrix_shape[1], target_chunk);
    layout.chunk_grid = {layout.matrix_shape[0] / layout.chunk_rows,
                         layout.matrix_shape[1] / layout.chunk_cols};
  } else {
    layout.chunk_rows = 1;
    layout.chunk_cols = ChunkLength(layout.matrix_shape[0], target_chunk);
    layout.chunk_grid = {layout.matrix_shape[0] / layout.chunk_cols};
  }
  layout.topk = std::min(topk, layout.chunk_size());
  return layout;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace demod
