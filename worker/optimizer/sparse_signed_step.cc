#include "worker/optimizer/sparse_signed_step.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "worker/optimizer/cpu_kernels.h"
#include "worker/optimizer/gemm_blocks.h"
#include "worker/optimizer/rounded_arithmetic.h"

namespace demod {
namespace cpu {
namespace {

// Scratch of DecodeSparseChunkRange, one per thread, sized for chunks of a x b.
struct SparseDecodeScratch {
  std::vector<uint8_t> used;
  std::vector<int32_t> slot;
  std::vector<float> yt, block;
  std::vector<const float*> f_cols_rows;  // F_c^T's rows for the used columns, ascending

  void Reserve(int64_t a, int64_t b) {
    f_cols_rows.resize(b);
    used.resize(b);
    slot.resize(b);
    yt.resize(a * b);
    block.resize(a * b);
  }
};

// Decodes the entries [first, last) of one chunk of a x b into s.block, in the order the
// header fixes. A routine of its own so that its loops are compiled for each instruction set
// (the products and sums are rounded one by one in all of them: no contraction in this file).
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
DecodeSparseChunk(uint64_t first, uint64_t last, const uint32_t* indices, const float* values,
                  int64_t a, int64_t b, const float* f_rows_t, const float* f_cols_t,
                  SparseDecodeScratch& s) {
  const uint32_t cols = static_cast<uint32_t>(b);
  // The columns holding an entry, ascending (as their rows of F_c^T), and each one's slot among
  // them.
  std::fill(s.used.begin(), s.used.begin() + b, 0);
  for (uint64_t e = first; e < last; ++e) s.used[indices[e] % cols] = 1;
  int64_t n_used = 0;
  for (int64_t j = 0; j < b; ++j) {  // branch-free: the count decides
    s.slot[j] = static_cast<int32_t>(n_used);
    s.f_cols_rows[n_used] = f_cols_t + j * b;
    n_used += s.used[j];
  }
  // yt[slot(j)] = y[:, j] for the columns j holding an entry (a = 1 for 1-D tensors).
  std::fill(s.yt.begin(), s.yt.begin() + n_used * a, 0.0f);
  for (uint64_t e = first; e < last; ++e) {
    const uint32_t i = indices[e] / cols;
    float* row = s.yt.data() + s.slot[indices[e] % cols] * a;
    const float* f = f_rows_t + i * a;  // F_r[:, i] as a row of F_r^T
    const float v = values[e];
    for (int64_t t = 0; t < a; ++t) row[t] = rounded::Add(row[t], rounded::Mul(v, f[t]));
  }
  // X = y [a x n_used] times the rows of F_c^T for the used columns [n_used x b], read in
  // place, and y read from yt as its transpose.
  GemmImpl<float, /*kTransposedA=*/true>(
      a, b, n_used, s.yt.data(), a, GatheredRows<float>{s.f_cols_rows.data()}, s.block.data(), b);
}

// Calls fn(chunk, block) for chunks [begin, end) of a sparse aggregate, block being the chunk
// decoded to chunk_rows x chunk_cols values (row-major, in the scratch), in the order the
// header fixes.
template <typename Fn>
void DecodeSparseChunkRange(int64_t begin, int64_t end, const uint64_t* chunk_offsets,
                            const uint32_t* indices, const float* values, const ChunkLayout& layout,
                            const float* f_rows_t, const float* f_cols_t, SparseDecodeScratch& s,
                            Fn fn) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  s.Reserve(a, b);
  for (int64_t chunk = begin; chunk < end; ++chunk) {
    const uint64_t first = chunk_offsets[chunk];
    const uint64_t last = chunk_offsets[chunk + 1];
    if (first == last) {
      std::fill(s.block.begin(), s.block.begin() + a * b, 0.0f);
    } else {
      DecodeSparseChunk(first, last, indices, values, a, b, f_rows_t, f_cols_t, s);
    }
    fn(chunk, s.block.data());
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void SignedStepRow(
    float* p, const float* x, int64_t n, bool decay, float keep, float step) {
  for (int64_t j = 0; j < n; ++j) p[j] = rounded::SignedStep(p[j], x[j], decay, keep, step);
}

// Asks for the cache lines of one row of a chunk that comes next, a row at a time while the
// current chunk's rows are updated. A chunk's rows are scattered over its tensor (a row of the
// tensor apart), more streams than the hardware prefetcher follows.
void PrefetchRow(const float* row, int64_t n) {
  for (int64_t c = 0; c < n; c += 64 / sizeof(float)) __builtin_prefetch(row + c, 1);
}

}  // namespace

void DecodeSparseChunks(const uint64_t* chunk_offsets, const uint32_t* indices, const float* values,
                        const ChunkLayout& layout, const float* f_rows_t, const float* f_cols_t,
                        float* x) {
  const ChunkGeometry geometry = GeometryOf(layout);
  at::parallel_for(0, layout.num_chunks(), ChunksPerTask(layout), [&](int64_t begin, int64_t end) {
    SparseDecodeScratch scratch;
    DecodeSparseChunkRange(begin, end, chunk_offsets, indices, values, layout, f_rows_t, f_cols_t,
                           scratch, [&](int64_t chunk, const float* block) {
                             float* out = x + ChunkOrigin(geometry, chunk);
                             for (int64_t i = 0; i < layout.chunk_rows; ++i) {
                               std::copy(block + i * layout.chunk_cols,
                                         block + (i + 1) * layout.chunk_cols,
                                         out + i * geometry.cols);
                             }
                           });
  });
}

void ApplySparseSignedSteps(const std::vector<SparseSignedStep>& tensors, bool decay, float keep,
                            float step) {
  // One parallel pass over all the tensors' chunks (a pass per tensor would pay a fork and a
  // join for each of them), split by elements so that the threads get equal work. A chunk
  // belongs to the range holding its first element.
  std::vector<int64_t> first_element(tensors.size() + 1, 0);
  for (size_t t = 0; t < tensors.size(); ++t) {
    first_element[t + 1] = first_element[t] + tensors[t].layout->num_elements();
  }
  const auto chunk_at = [](const ChunkLayout& layout, int64_t element) {
    const int64_t size = layout.chunk_size();
    return std::min(layout.num_chunks(), (element + size - 1) / size);
  };
  at::parallel_for(0, first_element.back(), 1 << 16, [&](int64_t begin, int64_t end) {
    SparseDecodeScratch scratch;
    size_t t = std::upper_bound(first_element.begin(), first_element.end(), begin) -
               first_element.begin() - 1;
    for (; t < tensors.size() && first_element[t] < end; ++t) {
      const SparseSignedStep& tensor = tensors[t];
      const ChunkLayout& layout = *tensor.layout;
      const ChunkGeometry geometry = GeometryOf(layout);
      const int64_t chunk_begin = chunk_at(layout, std::max<int64_t>(0, begin - first_element[t]));
      const int64_t chunk_end = chunk_at(layout, end - first_element[t]);
      DecodeSparseChunkRange(
          chunk_begin, chunk_end, tensor.chunk_offsets, tensor.indices, tensor.values, layout,
          tensor.f_rows_t, tensor.f_cols_t, scratch, [&](int64_t chunk, const float* block) {
            float* p = tensor.param + ChunkOrigin(geometry, chunk);
            const float* next =
                chunk + 1 < chunk_end ? tensor.param + ChunkOrigin(geometry, chunk + 1) : nullptr;
            for (int64_t i = 0; i < layout.chunk_rows; ++i) {
              if (next != nullptr) {
                PrefetchRow(next + i * geometry.cols, layout.chunk_cols);
              }
              SignedStepRow(p + i * geometry.cols, block + i * layout.chunk_cols, layout.chunk_cols,
                            decay, keep, step);
            }
          });
    }
  });
}

}  // namespace cpu
}  // namespace demod
