// Where a chunk's elements live in its tensor, shared by the CPU and CUDA kernels.
//
// A tensor is seen as a row-major matrix of `cols` columns (1-D tensors: one row) cut into
// chunks of chunk_rows x chunk_cols on a grid with `grid_cols` chunk columns, numbered
// row-major over the grid (common/chunk_layout.h). 1-D tensors: chunk_rows 1, grid_cols the
// number of chunks.
#ifndef DEMOD_WORKER_OPTIMIZER_CHUNK_ADDRESSING_H_
#define DEMOD_WORKER_OPTIMIZER_CHUNK_ADDRESSING_H_

#include <cstdint>

#include "worker/optimizer/host_device.h"

namespace demod {

struct ChunkGeometry {
  int64_t chunk_rows = 1;
  int64_t chunk_cols = 1;
  int64_t grid_cols = 1;
  int64_t cols = 1;
};

// The offset of a chunk's top-left element.
DEMOD_HOST_DEVICE int64_t ChunkOrigin(const ChunkGeometry& g, int64_t chunk) {
  return (chunk / g.grid_cols) * g.chunk_rows * g.cols + (chunk % g.grid_cols) * g.chunk_cols;
}

// The offset of the element at `position` in the wire's chunk order (chunk after chunk,
// row-major within a chunk; docs/wire-format.md).
DEMOD_HOST_DEVICE int64_t ChunkOrderToOffset(const ChunkGeometry& g, int64_t position) {
  const int64_t chunk_size = g.chunk_rows * g.chunk_cols;
  const int64_t chunk = position / chunk_size;
  const int64_t within = position - chunk * chunk_size;
  return ChunkOrigin(g, chunk) + (within / g.chunk_cols) * g.cols + within % g.chunk_cols;
}

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_CHUNK_ADDRESSING_H_
