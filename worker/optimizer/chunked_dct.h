// The chunked, orthonormal DCT-II that DeMo applies to momentum, and its inverse.
//
// A tensor is seen through its ChunkLayout (common/chunk_layout.h): 1-D [d] is cut into rows
// of chunk_cols; 2-D [r, q] into blocks of chunk_rows x chunk_cols to which the 2-D DCT is
// applied. The encoded form is always [num_chunks, chunk_size], chunks row-major over the
// chunk grid, each chunk flattened row-major: exactly the order of the wire's indices.
//
// On CPU, float and double use the kernels of cpu_kernels.h; other devices and dtypes use
// ATen matrix products. Both compute the same transform (to rounding).
//
// Bases are built once per (length, device, dtype) and cached for the process; the cache is
// thread-safe. Encode/Decode allocate their outputs and do not modify their inputs.
#ifndef DEMOD_WORKER_OPTIMIZER_CHUNKED_DCT_H_
#define DEMOD_WORKER_OPTIMIZER_CHUNKED_DCT_H_

#include <ATen/ATen.h>

#include "common/chunk_layout.h"
#include "common/sparse_payload.h"

namespace demod {

// The n x n orthonormal DCT-II basis F with encode(x)[b] = sum_j x[j] * F[j, b]
// (row j is the DCT of the j-th unit vector). Computed in double, cached.
at::Tensor DctBasis(int64_t n, at::Device device, at::ScalarType dtype);
// F^T, contiguous; cached likewise.
at::Tensor DctBasisTransposed(int64_t n, at::Device device, at::ScalarType dtype);

// x holds layout.num_elements() values in row-major order (any shape). Returns
// [num_chunks, chunk_size] in x's dtype.
at::Tensor EncodeChunks(const at::Tensor& x, const ChunkLayout& layout);

// The same, written into `out` ([num_chunks, chunk_size], x's device and dtype), e.g. a slice
// of a larger buffer.
void EncodeChunksInto(const at::Tensor& x, const ChunkLayout& layout, at::Tensor& out);

// The inverse: [num_chunks, chunk_size] -> layout.matrix_shape.
at::Tensor DecodeChunks(const at::Tensor& coefficients, const ChunkLayout& layout);

// One tensor of an aggregate (sparse coefficients) decoded to layout.matrix_shape, on the
// device and in the dtype of `options`. On CPU in float32 it never builds the dense
// coefficients (cpu::DecodeSparseChunks).
at::Tensor DecodeSparseChunks(const AggregateTensor& aggregate, const ChunkLayout& layout,
                              const at::TensorOptions& options);

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_CHUNKED_DCT_H_
