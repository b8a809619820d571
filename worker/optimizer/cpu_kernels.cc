#include "worker/optimizer/cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

namespace demod {
namespace cpu {
namespace {

// GCC vector extensions: 64-byte vectors that the compiler maps onto whatever the clone's
// instruction set has (one zmm, two ymm or four xmm registers).
typedef float FloatVec __attribute__((vector_size(64)));
typedef double DoubleVec __attribute__((vector_size(64)));
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  using type = FloatVec;
};
template <>
struct VecOf<double> {
  using type = DoubleVec;
};

// A kRows x (kVecs vectors) block of C, accumulated in registers over the whole K.
template <typename T, int kRows, int kVecs>
inline __attribute__((always_inline)) void GemmBlock(int64_t k, const T* a, int64_t lda, const T* b,
                                                     int64_t ldb, T* c, int64_t ldc) {
  using V = typename VecOf<T>::type;
  constexpr int kLanes = sizeof(V) / sizeof(T);
  V acc[kRows][kVecs] = {};
  for (int64_t p = 0; p < k; ++p) {
    V bv[kVecs];
    for (int v = 0; v < kVecs; ++v) __builtin_memcpy(&bv[v], b + p * ldb + v * kLanes, sizeof(V));
    for (int r = 0; r < kRows; ++r) {
      const T ar = a[r * lda + p];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVecs; ++v) {
      __builtin_memcpy(c + r * ldc + v * kLanes, &acc[r][v], sizeof(V));
    }
  }
}

// Columns that do not fill a vector.
template <typename T, int kRows>
inline __attribute__((always_inline)) void GemmTail(int64_t n, int64_t k, const T* a, int64_t lda,
                                                    const T* b, int64_t ldb, T* c, int64_t ldc) {
  for (int r = 0; r < kRows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      T sum = 0;
      for (int64_t p = 0; p < k; ++p) sum += a[r * lda + p] * b[p * ldb + j];
      c[r * ldc + j] = sum;
    }
  }
}

template <typename T, int kRows>
inline __attribute__((always_inline)) void GemmRows(int64_t n, int64_t k, const T* a, int64_t lda,
                                                    const T* b, int64_t ldb, T* c, int64_t ldc) {
  constexpr int kLanes = sizeof(typename VecOf<T>::type) / sizeof(T);
  int64_t j = 0;
  for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
    GemmBlock<T, kRows, 2>(k, a, lda, b + j, ldb, c + j, ldc);
  }
  for (; j + kLanes <= n; j += kLanes) GemmBlock<T, kRows, 1>(k, a, lda, b + j, ldb, c + j, ldc);
  if (j < n) GemmTail<T, kRows>(n - j, k, a, lda, b + j, ldb, c + j, ldc);
}

template <typename T>
inline __attribute__((always_inline)) void GemmImpl(int64_t m, int64_t n, int64_t k, const T* a,
                                                    int64_t lda, const T* b, int64_t ldb, T* c,
                                                    int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) GemmRows<T, 4>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc);
  for (; i < m; ++i) GemmRows<T, 1>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc);
}

// Chunks per parallel task: enough work to amortise the dispatch.
int64_t ChunkGrain(const ChunkLayout& layout) {
  return std::max<int64_t>(
      1, 16384 / (layout.chunk_size() * std::max<int64_t>(layout.chunk_rows, layout.chunk_cols)));
}

// The top-left corner of a chunk in its tensor's row-major matrix.
int64_t ChunkOrigin(const ChunkLayout& layout, int64_t chunk) {
  if (!layout.is_2d()) return chunk * layout.chunk_cols;
  const int64_t col_chunks = layout.chunk_grid[1];
  return (chunk / col_chunks) * layout.chunk_rows * layout.matrix_shape[1] +
         (chunk % col_chunks) * layout.chunk_cols;
}

}  // namespace

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void Gemm(
    int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
    float* c, int64_t ldc) {
  GemmImpl(m, n, k, a, lda, b, ldb, c, ldc);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void Gemm(
    int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
    double* c, int64_t ldc) {
  GemmImpl(m, n, k, a, lda, b, ldb, c, ldc);
}

// Encodes chunk `chunk` of x into out (chunk_size values); y is chunk_size of scratch.
template <typename T>
void EncodeChunk(const T* x, const ChunkLayout& layout, int64_t chunk, const T* f_rows_t,
                 const T* f_cols, T* y, T* out) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  if (!layout.is_2d()) {
    Gemm(1, b, b, x + ChunkOrigin(layout, chunk), b, f_cols, b, out, b);
    return;
  }
  // Y = X F_cols, read straight from the parameter layout; Z = F_rows^T Y.
  Gemm(a, b, b, x + ChunkOrigin(layout, chunk), layout.matrix_shape[1], f_cols, b, y, b);
  Gemm(a, b, a, f_rows_t, a, y, b, out, b);
}

template <typename T>
void EncodeChunks(const T* x, const ChunkLayout& layout, const T* f_rows_t, const T* f_cols,
                  T* out) {
  const int64_t b = layout.chunk_cols;
  const int64_t size = layout.chunk_size();
  if (!layout.is_2d()) {
    // Rows of b values: one GEMM over any range of rows.
    at::parallel_for(0, layout.num_chunks(), ChunkGrain(layout), [&](int64_t begin, int64_t end) {
      Gemm(end - begin, b, b, x + begin * b, b, f_cols, b, out + begin * b, b);
    });
    return;
  }
  at::parallel_for(0, layout.num_chunks(), ChunkGrain(layout), [&](int64_t begin, int64_t end) {
    std::vector<T> y(size);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      EncodeChunk(x, layout, chunk, f_rows_t, f_cols, y.data(), out + chunk * size);
    }
  });
}

template <typename T>
void DecodeChunks(const T* coefficients, const ChunkLayout& layout, const T* f_rows,
                  const T* f_cols_t, T* x) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  const int64_t size = layout.chunk_size();
  if (!layout.is_2d()) {
    at::parallel_for(0, layout.num_chunks(), ChunkGrain(layout), [&](int64_t begin, int64_t end) {
      Gemm(end - begin, b, b, coefficients + begin * b, b, f_cols_t, b, x + begin * b, b);
    });
    return;
  }
  const int64_t cols = layout.matrix_shape[1];
  at::parallel_for(0, layout.num_chunks(), ChunkGrain(layout), [&](int64_t begin, int64_t end) {
    std::vector<T> y(size);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      // Y = F_rows Z; X = Y F_cols^T, written straight into the parameter layout.
      Gemm(a, b, a, f_rows, a, coefficients + chunk * size, b, y.data(), b);
      Gemm(a, b, b, y.data(), b, f_cols_t, b, x + ChunkOrigin(layout, chunk), cols);
    }
  });
}

template void EncodeChunks<float>(const float*, const ChunkLayout&, const float*, const float*,
                                  float*);
template void EncodeChunks<double>(const double*, const ChunkLayout&, const double*, const double*,
                                   double*);
template void DecodeChunks<float>(const float*, const ChunkLayout&, const float*, const float*,
                                  float*);
template void DecodeChunks<double>(const double*, const ChunkLayout&, const double*, const double*,
                                   double*);

namespace {

// Calls fn(chunk, block) for every chunk of a sparse aggregate, block being the chunk decoded
// to chunk_rows x chunk_cols values (row-major, scratch owned by the calling thread).
template <typename Fn>
void ForEachDecodedChunk(const uint64_t* chunk_offsets, const uint32_t* indices,
                         const float* values, const ChunkLayout& layout, const float* f_rows_t,
                         const float* f_cols_t, Fn fn) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  at::parallel_for(0, layout.num_chunks(), ChunkGrain(layout), [&](int64_t begin, int64_t end) {
    // X = F_rows Z F_cols^T = sum over the columns j of Z holding an entry of
    //   (F_rows Z[:, j]) outer F_cols^T[j, :].
    // yt[s] = (F_rows Z[:, j_s])^T for the s-th such column; a = 1 for 1-D tensors.
    std::vector<int32_t> slot(b);
    std::vector<uint32_t> used_cols;
    std::vector<float> yt, y, f_cols_rows, block(a * b);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const uint64_t first = chunk_offsets[chunk];
      const uint64_t last = chunk_offsets[chunk + 1];
      if (first == last) {
        std::fill(block.begin(), block.end(), 0.0f);
        fn(chunk, block.data());
        continue;
      }
      std::fill(slot.begin(), slot.end(), -1);
      used_cols.clear();
      for (uint64_t e = first; e < last; ++e) {
        const uint32_t j = indices[e] % b;
        if (slot[j] < 0) {
          slot[j] = static_cast<int32_t>(used_cols.size());
          used_cols.push_back(j);
        }
      }
      const int64_t n_used = static_cast<int64_t>(used_cols.size());
      yt.assign(n_used * a, 0.0f);
      for (uint64_t e = first; e < last; ++e) {
        const uint32_t i = indices[e] / b;
        float* row = yt.data() + slot[indices[e] % b] * a;
        const float* f = f_rows_t + i * a;  // F_rows[:, i] as a row of F_rows^T
        const float v = values[e];
        for (int64_t t = 0; t < a; ++t) row[t] += v * f[t];
      }
      // y = yt^T [a x n_used]; rows of F_cols^T for the used columns [n_used x b].
      y.resize(a * n_used);
      for (int64_t s = 0; s < n_used; ++s) {
        for (int64_t t = 0; t < a; ++t) y[t * n_used + s] = yt[s * a + t];
      }
      f_cols_rows.resize(n_used * b);
      for (int64_t s = 0; s < n_used; ++s) {
        std::copy(f_cols_t + used_cols[s] * b, f_cols_t + (used_cols[s] + 1) * b,
                  f_cols_rows.begin() + s * b);
      }
      Gemm(a, b, n_used, y.data(), n_used, f_cols_rows.data(), b, block.data(), b);
      fn(chunk, block.data());
    }
  });
}

// p <- p * keep (when decay) + step * sign(x). Contraction is off: the product and the sum
// are rounded separately, as the ATen operators (mul_, add_ with alpha) round them on every
// device, so CPU and GPU workers compute identical parameters.
__attribute__((optimize("fp-contract=off"))) void SignedStepRow(float* p, const float* x, int64_t n,
                                                                bool decay, float keep,
                                                                float step) {
  for (int64_t j = 0; j < n; ++j) {
    const float kept = decay ? p[j] * keep : p[j];
    const float sign = static_cast<float>((x[j] > 0.0f) - (x[j] < 0.0f));
    p[j] = kept + step * sign;
  }
}

}  // namespace

void DecodeSparseChunks(const uint64_t* chunk_offsets, const uint32_t* indices, const float* values,
                        const ChunkLayout& layout, const float* f_rows_t, const float* f_cols_t,
                        float* x) {
  const int64_t cols = layout.matrix_shape.back();
  ForEachDecodedChunk(chunk_offsets, indices, values, layout, f_rows_t, f_cols_t,
                      [&](int64_t chunk, const float* block) {
                        float* out = x + ChunkOrigin(layout, chunk);
                        for (int64_t i = 0; i < layout.chunk_rows; ++i) {
                          std::copy(block + i * layout.chunk_cols,
                                    block + (i + 1) * layout.chunk_cols, out + i * cols);
                        }
                      });
}

void ApplySparseSignedStep(const uint64_t* chunk_offsets, const uint32_t* indices,
                           const float* values, const ChunkLayout& layout, const float* f_rows_t,
                           const float* f_cols_t, bool decay, float keep, float step,
                           float* param) {
  const int64_t cols = layout.matrix_shape.back();
  ForEachDecodedChunk(chunk_offsets, indices, values, layout, f_rows_t, f_cols_t,
                      [&](int64_t chunk, const float* block) {
                        float* p = param + ChunkOrigin(layout, chunk);
                        for (int64_t i = 0; i < layout.chunk_rows; ++i) {
                          SignedStepRow(p + i * cols, block + i * layout.chunk_cols,
                                        layout.chunk_cols, decay, keep, step);
                        }
                      });
}

namespace {

// A value outranks another by larger magnitude, then by lower position; NaN is largest.
struct Ranked {
  float magnitude;
  int64_t position;
  bool operator>(const Ranked& o) const {
    return magnitude > o.magnitude || (magnitude == o.magnitude && position < o.position);
  }
};

float Magnitude(float v) {
  const float m = std::fabs(v);
  return m <= std::numeric_limits<float>::max() ? m : std::numeric_limits<float>::infinity();
}

// Writes the positions of the values of v whose magnitude is not below `threshold` (NaN
// included) to positions[0..count) and returns count. Branch-free: the store always happens,
// the count only advances on a hit.
int64_t CollectAtLeast(const float* v, int64_t n, float threshold, int32_t* positions) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) {
    positions[count] = static_cast<int32_t>(j);
    count += !(std::fabs(v[j]) < threshold);
  }
  return count;
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void AccumulateRow(
    float* momentum, const float* gradient, float decay, float lr, int64_t n) {
  for (int64_t j = 0; j < n; ++j) momentum[j] = decay * momentum[j] + lr * gradient[j];
}

// The k positions of largest magnitude in one row, sorted; `sample`, `positions` (n entries)
// and `candidates` are scratch.
void SelectRow(const float* v, int64_t n, int64_t k, std::vector<float>& sample,
               std::vector<int32_t>& positions, std::vector<Ranked>& candidates, int64_t* out) {
  // Guess a threshold a little below the k-th largest magnitude from a sample (an odd stride,
  // so it does not line up with the rows of 2-D chunks); one pass keeps the values at or
  // above it, about 2k, and the exact top k is chosen among them.
  float threshold = 0;
  const int64_t stride = (n / (16 * k)) | 1;
  if (stride > 1) {
    sample.clear();
    for (int64_t j = 0; j < n; j += stride) sample.push_back(Magnitude(v[j]));
    const int64_t size = static_cast<int64_t>(sample.size());
    const int64_t rank = std::min(size - 1, 2 * ((k * size + n - 1) / n));
    std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<>());
    threshold = sample[rank];
  }
  int64_t count = CollectAtLeast(v, n, threshold, positions.data());
  if (count < k) count = CollectAtLeast(v, n, 0.0f, positions.data());  // the guess was high
  candidates.resize(count);
  for (int64_t c = 0; c < count; ++c) candidates[c] = {Magnitude(v[positions[c]]), positions[c]};
  std::nth_element(candidates.begin(), candidates.begin() + (k - 1), candidates.end(),
                   std::greater<>());
  for (int64_t j = 0; j < k; ++j) out[j] = candidates[j].position;
  std::sort(out, out + k);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) bool AllFinite(
    const float* v, int64_t n) {
  bool finite = true;
  for (int64_t j = 0; j < n; ++j) finite &= std::fabs(v[j]) <= std::numeric_limits<float>::max();
  return finite;
}

}  // namespace

void TopKByMagnitude(const float* x, int64_t rows, int64_t n, int64_t k, int64_t* indices) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / n), [&](int64_t begin, int64_t end) {
    std::vector<float> sample;
    std::vector<int32_t> positions(n);
    std::vector<Ranked> candidates;
    for (int64_t row = begin; row < end; ++row) {
      SelectRow(x + row * n, n, k, sample, positions, candidates, indices + row * k);
    }
  });
}

void EncodeAccumulateSelect(const std::vector<GradientChunks>& sources, int64_t rows, int64_t n,
                            int64_t k, float decay, float lr, float* momentum, int64_t* indices,
                            uint8_t* row_finite) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / (n * 8)), [&](int64_t begin, int64_t end) {
    std::vector<float> sample, scratch(n), encoded(n);
    std::vector<int32_t> positions(n);
    std::vector<Ranked> candidates;
    // The source holding `begin`: the last one whose first row is not after it.
    size_t s =
        std::upper_bound(sources.begin(), sources.end(), begin,
                         [](int64_t row, const GradientChunks& g) { return row < g.first_row; }) -
        sources.begin() - 1;
    for (int64_t row = begin; row < end; ++row) {
      while (s + 1 < sources.size() && sources[s + 1].first_row <= row) ++s;
      const GradientChunks& src = sources[s];
      float* v = momentum + row * n;
      bool finite = true;
      if (src.gradient != nullptr) {
        EncodeChunk(src.gradient, *src.layout, row - src.first_row, src.f_rows_t, src.f_cols,
                    scratch.data(), encoded.data());
        finite = AllFinite(encoded.data(), n);
      }
      row_finite[row] = finite;
      if (src.gradient != nullptr && finite) {
        AccumulateRow(v, encoded.data(), decay, lr, n);
      } else if (decay != 1.0f) {
        for (int64_t j = 0; j < n; ++j) v[j] *= decay;
      }
      SelectRow(v, n, k, sample, positions, candidates, indices + row * k);
    }
  });
}

}  // namespace cpu
}  // namespace demod
