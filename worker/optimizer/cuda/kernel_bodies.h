// The bodies of the CUDA kernels (cuda_kernels.h), as __host__ __device__ functions of a thread
// index, so that the CPU tests run the kernels' own code: a block is stood in for by calling a
// phase for every thread in turn, and a barrier by finishing the phase before the next.
// No CUDA headers: the host compiler takes this file too (with -ffp-contract=off, see
// rounded_arithmetic.h).
#ifndef DEMOD_WORKER_OPTIMIZER_CUDA_KERNEL_BODIES_H_
#define DEMOD_WORKER_OPTIMIZER_CUDA_KERNEL_BODIES_H_

#include <cstdint>

#include "worker/optimizer/chunk_addressing.h"
#include "worker/optimizer/rounded_arithmetic.h"

namespace demod {
namespace cuda {

// One tensor of a sparse signed step (device pointers).
struct SignedStepTensor {
  float* param = nullptr;           // row-major, geometry.cols columns
  const float* f_rows_t = nullptr;  // F_r^T, chunk_rows x chunk_rows
  const float* f_cols_t = nullptr;  // F_c^T, chunk_cols x chunk_cols
  ChunkGeometry geometry;
};

// Every tensor's aggregate, their chunks numbered one after another (device pointers).
struct SparseSignedSteps {
  const SignedStepTensor* tensors = nullptr;
  const int32_t* chunk_tensor = nullptr;     // [total_chunks]: the tensor a chunk belongs to
  const int64_t* chunk_in_tensor = nullptr;  // [total_chunks]: its number in that tensor
  const uint64_t* chunk_offsets = nullptr;   // [total_chunks + 1] into indices / values
  const uint32_t* indices = nullptr;         // within the chunk: i * chunk_cols + j
  const float* values = nullptr;
  int64_t total_chunks = 0;
  int64_t max_chunk_size = 0;  // the largest chunk_rows * chunk_cols
  int64_t max_chunk_cols = 0;
};

// One block's scratch for one chunk: y (chunk_rows x chunk_cols, row-major), the ascending list
// of the columns holding an entry and its length, and a flag per column.
struct ChunkScratch {
  float* y = nullptr;
  int* used = nullptr;
  int* flag = nullptr;
  int* n_used = nullptr;
};

// Floats of scratch a block needs: y, then the column list and the flags.
DEMOD_HOST_DEVICE int64_t ChunkScratchFloats(const SparseSignedSteps& s) {
  return s.max_chunk_size + 2 * s.max_chunk_cols;
}

// The chunk a block works on, and where its scratch lies.
struct ChunkWork {
  const SignedStepTensor* tensor;
  int64_t a, b;          // chunk_rows, chunk_cols
  uint64_t first, last;  // its entries
  float* origin;         // its top-left parameter
  ChunkScratch scratch;
};

DEMOD_HOST_DEVICE ChunkWork WorkOn(const SparseSignedSteps& s, int64_t chunk, float* scratch) {
  ChunkWork w;
  w.tensor = &s.tensors[s.chunk_tensor[chunk]];
  w.a = w.tensor->geometry.chunk_rows;
  w.b = w.tensor->geometry.chunk_cols;
  w.first = s.chunk_offsets[chunk];
  w.last = s.chunk_offsets[chunk + 1];
  w.origin = w.tensor->param + ChunkOrigin(w.tensor->geometry, s.chunk_in_tensor[chunk]);
  w.scratch.y = scratch;
  w.scratch.used = reinterpret_cast<int*>(scratch + s.max_chunk_size);
  w.scratch.flag = w.scratch.used + s.max_chunk_cols;
  return w;
}

// Phase 1: clear the column flags.
DEMOD_HOST_DEVICE void ClearFlags(const ChunkWork& w, int thread, int threads) {
  for (int64_t j = thread; j < w.b; j += threads) w.scratch.flag[j] = 0;
}

// Phase 2: flag the columns holding an entry (threads may write the same flag: all write 1).
DEMOD_HOST_DEVICE void FlagColumns(const SparseSignedSteps& s, const ChunkWork& w, int thread,
                                   int threads) {
  for (uint64_t e = w.first + thread; e < w.last; e += threads) {
    w.scratch.flag[s.indices[e] % w.b] = 1;
  }
}

// Phase 3, one thread: list the flagged columns, ascending.
DEMOD_HOST_DEVICE void ListColumns(const ChunkWork& w) {
  int count = 0;
  for (int64_t j = 0; j < w.b; ++j) {
    if (w.scratch.flag[j]) w.scratch.used[count++] = static_cast<int>(j);
  }
  *w.scratch.n_used = count;
}

// Phase 4: zero y in the listed columns.
DEMOD_HOST_DEVICE void ClearY(const ChunkWork& w, int cols_used, int thread, int threads) {
  for (int64_t q = thread; q < w.a * cols_used; q += threads) {
    w.scratch.y[(q / cols_used) * w.b + w.scratch.used[q % cols_used]] = 0.0f;
  }
}

// Phase 5: y[r, j] = sum over the entries of column j, in entry order, of v * F_r[r, i]. Each
// thread owns whole rows of y, so the sums never race and keep their order.
DEMOD_HOST_DEVICE void AccumulateY(const SparseSignedSteps& s, const ChunkWork& w, int thread,
                                   int threads) {
  for (int64_t r = thread; r < w.a; r += threads) {
    float* y_row = w.scratch.y + r * w.b;
    for (uint64_t e = w.first; e < w.last; ++e) {
      const int64_t i = s.indices[e] / w.b;
      const int64_t j = s.indices[e] % w.b;
      y_row[j] = rounded::Add(y_row[j], rounded::Mul(s.values[e], w.tensor->f_rows_t[i * w.a + r]));
    }
  }
}

// X[r, c] = sum over the listed columns of y[r, j] * F_c[c, j].
DEMOD_HOST_DEVICE float DecodedElement(const ChunkWork& w, int cols_used, int64_t r, int64_t c) {
  float x = 0.0f;
  for (int u = 0; u < cols_used; ++u) {
    const int j = w.scratch.used[u];
    x = rounded::Add(x, rounded::Mul(w.scratch.y[r * w.b + j], w.tensor->f_cols_t[j * w.b + c]));
  }
  return x;
}

// Phase 6: the signed step of every element by its decoded value.
DEMOD_HOST_DEVICE void StepElements(const ChunkWork& w, int cols_used, bool decay, float keep,
                                    float step, int thread, int threads) {
  const int64_t cols = w.tensor->geometry.cols;
  for (int64_t q = thread; q < w.a * w.b; q += threads) {
    const int64_t r = q / w.b;
    const int64_t c = q - r * w.b;
    float& p = w.origin[r * cols + c];
    p = rounded::SignedStep(p, DecodedElement(w, cols_used, r, c), decay, keep, step);
  }
}

// The dense AdamW update of the element at `position` of the gradient's chunk order.
DEMOD_HOST_DEVICE void AdamWAt(int64_t position, const float* gradient,
                               const ChunkGeometry& geometry, const rounded::AdamWScalars& s,
                               float* param, float* m, float* v) {
  const int64_t at = ChunkOrderToOffset(geometry, position);
  rounded::AdamWElement(gradient[position], s, m[at], v[at], param[at]);
}

}  // namespace cuda
}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_CUDA_KERNEL_BODIES_H_
