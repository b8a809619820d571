// Hand-written CPU kernels for the optimizer's hot loops, where LibTorch's general operators
// lose most of their time: the chunked DCT (small matrices, K = chunk length, on which BLAS
// spends more time packing than multiplying) and per-chunk top-k selection.
//
// Each chunk is computed by one thread with a fixed instruction sequence, so results do not
// depend on the number of threads. Kernels are compiled for AVX-512, AVX2+FMA and baseline
// x86-64 and picked at load time.
//
// All pointers address contiguous row-major data; T is float or double.
#ifndef DEMOD_WORKER_OPTIMIZER_CPU_KERNELS_H_
#define DEMOD_WORKER_OPTIMIZER_CPU_KERNELS_H_

#include <cstdint>
#include <vector>

#include "common/chunk_layout.h"
#include "common/value_encoding.h"
#include "worker/optimizer/chunk_addressing.h"

namespace demod {
namespace cpu {

// The chunk geometry (chunk_addressing.h) of a layout.
ChunkGeometry GeometryOf(const ChunkLayout& layout);

// Chunks of `layout` per parallel task: enough work to amortise the dispatch.
int64_t ChunksPerTask(const ChunkLayout& layout);

// C[m x n] = A[m x k] * B[k x n], with leading dimensions (row strides) lda, ldb, ldc.
void Gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          float* c, int64_t ldc);
void Gemm(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc);

// x: layout.matrix_shape, row-major. out: [num_chunks, chunk_size]. f_rows/f_cols: the DCT
// bases of chunk_rows and chunk_cols (F, see chunked_dct.h); f_rows_t is F_rows transposed.
template <typename T>
void EncodeChunks(const T* x, const ChunkLayout& layout, const T* f_rows_t, const T* f_cols,
                  T* out);
// The inverse: coefficients [num_chunks, chunk_size] -> x in matrix_shape. f_cols_t is F_cols
// transposed.
template <typename T>
void DecodeChunks(const T* coefficients, const ChunkLayout& layout, const T* f_rows,
                  const T* f_cols_t, T* x);

// For each of `rows` rows of n values, the k positions of largest |value| (k <= n), written
// sorted by position to indices[row * k ...]. NaN counts as largest, as in torch.topk.
void TopKByMagnitude(const float* x, int64_t rows, int64_t n, int64_t k, int64_t* indices);

// One tensor's share of a group of momentum rows (chunks of the same size from several
// tensors, see DemoOptimizer).
struct GradientChunks {
  const float* gradient = nullptr;  // layout.matrix_shape, row-major; null: a zero gradient
  const ChunkLayout* layout = nullptr;
  int64_t first_row = 0;  // the row of its first chunk in the group
  const float* f_rows_t = nullptr;
  const float* f_cols = nullptr;
};

// The optimizer's whole per-chunk pipeline in one pass over the momentum, each chunk while it
// is in cache: g = DCT(gradient chunk); momentum row <- decay * row + lr * g (g dropped, with
// row_finite[row] = 0, when it is not finite); the row's top k by magnitude into
// indices[row * k ...], sorted, and their values into values[row * k ...]; then each of them
// leaves the row, except what `encoding` rounds away (bf16 and f16 keep their rounding, to be
// sent later). `sources` cover rows [0, rows) of n coefficients.
void EncodeAccumulateSelect(const std::vector<GradientChunks>& sources, int64_t rows, int64_t n,
                            int64_t k, float decay, float lr, ValueEncoding encoding,
                            float* momentum, int64_t* indices, float* values, uint8_t* row_finite);

// Whether a coefficient sent in `encoding` leaves the momentum whole: f32 loses nothing, and a
// sign carries no magnitude, so with kSign the whole coefficient counts as sent.
bool SendsWholeValue(ValueEncoding encoding);
// What stays of a sent coefficient in the momentum: the rounding `encoding` loses (0 when it
// SendsWholeValue).
float UnsentPart(ValueEncoding encoding, float value);

}  // namespace cpu
}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_CPU_KERNELS_H_
