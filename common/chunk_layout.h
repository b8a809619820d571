// How DeMo cuts a tensor into chunks for the DCT, and how many coefficients each chunk keeps.
//
// The rule is the reference optimizer's (see docs/wire-format.md and the DeMo notes): a
// dimension of size d is cut into pieces of ChunkLength(d, target). A 0-D tensor is treated as
// 1-D of length 1; a tensor of rank >= 3, [o, d1, d2, ...], as 2-D [o, d1*d2*...].
//
// ChunkLayout is a plain value, cheap to copy, safe to share between threads.
#ifndef DEMOD_COMMON_CHUNK_LAYOUT_H_
#define DEMOD_COMMON_CHUNK_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace demod {

// The chunk length for a dimension of size `dim` given the target chunk size: `target` if it
// divides `dim`; else the largest divisor below the first divisor above `target`; `dim` itself
// when no divisor exceeds `target`. Requires dim >= 1 and target >= 1.
int64_t ChunkLength(int64_t dim, int64_t target);

struct ChunkLayout {
  // The tensor's shape seen as 1-D ([d]) or 2-D ([rows, cols]).
  std::vector<int64_t> matrix_shape;
  // Leading shape of the encoded tensor: [d / chunk_cols] for 1-D, [rows / chunk_rows,
  // cols / chunk_cols] for 2-D. Chunks are numbered row-major over this grid.
  std::vector<int64_t> chunk_grid;
  int64_t chunk_rows = 1;  // 1 for 1-D tensors
  int64_t chunk_cols = 1;
  int64_t topk = 1;  // coefficients kept per chunk, clamped to [1, chunk_size()]

  bool is_2d() const { return matrix_shape.size() == 2; }
  int64_t chunk_size() const { return chunk_rows * chunk_cols; }
  int64_t num_chunks() const;
  int64_t num_elements() const { return num_chunks() * chunk_size(); }
  int64_t num_selected() const { return num_chunks() * topk; }

  friend bool operator==(const ChunkLayout& a, const ChunkLayout& b);
};

// The layout of a tensor of `shape`. Fails with INVALID_ARGUMENT for a dimension < 1, a target
// chunk < 1 or a topk < 1.
absl::StatusOr<ChunkLayout> MakeChunkLayout(const std::vector<int64_t>& shape, int64_t target_chunk,
                                            int64_t topk);

// "[2, 3]" for error messages and logs.
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace demod

#endif  // DEMOD_COMMON_CHUNK_LAYOUT_H_
