// DeMo's steps 9-10 on the CPU: decode each tensor's sparse aggregate (the mean DCT
// coefficients of every worker's selection) and move the parameter by a signed step, without
// materialising the dense decoded tensor.
//
// The decode fixes one order of operations, which the CUDA kernels (cuda_kernels.h) follow
// element for element, so CPU and CUDA workers compute the same bits. For a chunk whose
// aggregate holds entries e (index i_e * chunk_cols + j_e, value v_e, in the aggregate's order),
// with F_r, F_c the DCT bases of the chunk's sides (chunked_dct.h):
//   y[r, j] = sum over the entries e of column j, in entry order, of v_e * F_r[r, i_e]
//   X[r, c] = sum over the columns j holding an entry, ascending, of y[r, j] * F_c[c, j]
//   p[r, c] <- rounded::SignedStep(p[r, c], X[r, c], decay, keep, step)
// every sum starting from 0 and every product and sum rounded on its own (rounded_arithmetic.h;
// this file is compiled without contraction). The cost is O(entries * chunk_rows +
// chunk_rows * (columns holding an entry) * chunk_cols) per chunk instead of a dense inverse
// transform: DeMo's aggregate keeps a few percent of the coefficients.
#ifndef DEMOD_WORKER_OPTIMIZER_SPARSE_SIGNED_STEP_H_
#define DEMOD_WORKER_OPTIMIZER_SPARSE_SIGNED_STEP_H_

#include <cstdint>
#include <vector>

#include "common/chunk_layout.h"

namespace demod {
namespace cpu {

// Decodes a sparse aggregate into x (layout.matrix_shape, row-major): entries of chunk c are
// [chunk_offsets[c], chunk_offsets[c + 1]) of indices / values. f_rows_t, f_cols_t: the bases
// F_r^T and F_c^T of the chunk's sides.
void DecodeSparseChunks(const uint64_t* chunk_offsets, const uint32_t* indices, const float* values,
                        const ChunkLayout& layout, const float* f_rows_t, const float* f_cols_t,
                        float* x);

// One tensor's sparse aggregate (as for DecodeSparseChunks) and its parameter
// (layout.matrix_shape, row-major).
struct SparseSignedStep {
  const uint64_t* chunk_offsets = nullptr;
  const uint32_t* indices = nullptr;
  const float* values = nullptr;
  const ChunkLayout* layout = nullptr;
  const float* f_rows_t = nullptr;
  const float* f_cols_t = nullptr;
  float* param = nullptr;
};

// Step 10 fused with the decode, for every tensor in one parallel pass: param <- param * keep
// (when decay) + step * sign(X) where X is the tensor's decoded aggregate. The result does not
// depend on the number of threads.
void ApplySparseSignedSteps(const std::vector<SparseSignedStep>& tensors, bool decay, float keep,
                            float step);

}  // namespace cpu
}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_SPARSE_SIGNED_STEP_H_
