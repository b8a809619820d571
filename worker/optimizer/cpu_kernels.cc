#include "worker/optimizer/cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "worker/optimizer/gemm_blocks.h"

namespace demod {
namespace cpu {

int64_t ChunksPerTask(const ChunkLayout& layout) {
  return std::max<int64_t>(
      1, 16384 / (layout.chunk_size() * std::max<int64_t>(layout.chunk_rows, layout.chunk_cols)));
}

ChunkGeometry GeometryOf(const ChunkLayout& layout) {
  if (!layout.is_2d()) return {1, layout.chunk_cols, layout.num_chunks(), layout.matrix_shape[0]};
  return {layout.chunk_rows, layout.chunk_cols, layout.chunk_grid[1], layout.matrix_shape[1]};
}

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

// Per-thread scratch of EncodeChunk, with the halves of the column basis it last folded.
template <typename T>
struct EncodeScratch {
  std::vector<T> y, folded_a, folded_b, half_a, half_b;
  const T* halves_of = nullptr;  // the f_cols that f_even and f_odd were taken from
  std::vector<T> f_even, f_odd;  // F[j, 2m] and F[j, 2m + 1] for j, m < b / 2
};

// The DCT-II basis is symmetric about its middle: F[n - 1 - j, c] = (-1)^c F[j, c]. So the
// even coefficients of a length-n transform are the transform of the folded sum
// x[j] + x[n - 1 - j] by the even columns of F's first n / 2 rows, and the odd ones that of the
// difference by the odd columns: two products of half the size, half the multiplications.
// Used along both axes of 2-D chunks whose sides are even.
template <typename T>
inline __attribute__((always_inline)) void EncodeFoldedChunkImpl(const T* x, int64_t ldx, int64_t a,
                                                                 int64_t b, const T* f_rows_t,
                                                                 const T* f_cols,
                                                                 EncodeScratch<T>& s, T* out) {
  const int64_t ha = a / 2;
  const int64_t hb = b / 2;
  if (s.halves_of != f_cols || static_cast<int64_t>(s.f_even.size()) != hb * hb) {
    s.f_even.resize(hb * hb);
    s.f_odd.resize(hb * hb);
    for (int64_t j = 0; j < hb; ++j) {
      for (int64_t m = 0; m < hb; ++m) {
        s.f_even[j * hb + m] = f_cols[j * b + 2 * m];
        s.f_odd[j * hb + m] = f_cols[j * b + 2 * m + 1];
      }
    }
    s.halves_of = f_cols;
  }
  s.y.resize(a * b);
  s.folded_a.resize(ha * b);
  s.folded_b.resize(ha * b);
  s.half_a.resize(a * hb);
  s.half_b.resize(a * hb);
  // Along the rows: Y = F_rows^T X, its even rows from the sums of X's mirrored rows, its odd
  // rows from their differences (F_rows^T's even / odd rows, first a / 2 columns).
  for (int64_t j = 0; j < ha; ++j) {
    const T* top = x + j * ldx;
    const T* bottom = x + (a - 1 - j) * ldx;
    for (int64_t c = 0; c < b; ++c) {
      s.folded_a[j * b + c] = top[c] + bottom[c];
      s.folded_b[j * b + c] = top[c] - bottom[c];
    }
  }
  Gemm(ha, b, ha, f_rows_t, 2 * a, s.folded_a.data(), b, s.y.data(), 2 * b);
  Gemm(ha, b, ha, f_rows_t + a, 2 * a, s.folded_b.data(), b, s.y.data() + b, 2 * b);
  // Along the columns: Z = Y F_cols from the sums and differences of Y's mirrored columns.
  for (int64_t r = 0; r < a; ++r) {
    const T* row = s.y.data() + r * b;
    for (int64_t j = 0; j < hb; ++j) {
      s.half_a[r * hb + j] = row[j] + row[b - 1 - j];
      s.half_b[r * hb + j] = row[j] - row[b - 1 - j];
    }
  }
  T* even = s.folded_a.data();  // a x hb, reusing the row stage's buffers
  T* odd = s.folded_b.data();
  Gemm(a, hb, hb, s.half_a.data(), hb, s.f_even.data(), hb, even, hb);
  Gemm(a, hb, hb, s.half_b.data(), hb, s.f_odd.data(), hb, odd, hb);
  for (int64_t r = 0; r < a; ++r) {
    for (int64_t m = 0; m < hb; ++m) {
      out[r * b + 2 * m] = even[r * hb + m];
      out[r * b + 2 * m + 1] = odd[r * hb + m];
    }
  }
}

namespace {

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
EncodeFoldedChunk(const float* x, int64_t ldx, int64_t a, int64_t b, const float* f_rows_t,
                  const float* f_cols, EncodeScratch<float>& s, float* out) {
  EncodeFoldedChunkImpl(x, ldx, a, b, f_rows_t, f_cols, s, out);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
EncodeFoldedChunk(const double* x, int64_t ldx, int64_t a, int64_t b, const double* f_rows_t,
                  const double* f_cols, EncodeScratch<double>& s, double* out) {
  EncodeFoldedChunkImpl(x, ldx, a, b, f_rows_t, f_cols, s, out);
}

}  // namespace

// Encodes chunk `chunk` of x into out (chunk_size values).
template <typename T>
void EncodeChunk(const T* x, const ChunkLayout& layout, int64_t chunk, const T* f_rows_t,
                 const T* f_cols, EncodeScratch<T>& s, T* out) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  const T* origin = x + ChunkOrigin(GeometryOf(layout), chunk);
  if (!layout.is_2d()) {
    Gemm(1, b, b, origin, b, f_cols, b, out, b);
    return;
  }
  const int64_t ldx = layout.matrix_shape[1];
  if (a % 2 == 0 && b % 2 == 0) {
    EncodeFoldedChunk(origin, ldx, a, b, f_rows_t, f_cols, s, out);
    return;
  }
  // Y = X F_cols, read straight from the parameter layout; Z = F_rows^T Y.
  s.y.resize(a * b);
  Gemm(a, b, b, origin, ldx, f_cols, b, s.y.data(), b);
  Gemm(a, b, a, f_rows_t, a, s.y.data(), b, out, b);
}

template <typename T>
void EncodeChunks(const T* x, const ChunkLayout& layout, const T* f_rows_t, const T* f_cols,
                  T* out) {
  const int64_t b = layout.chunk_cols;
  const int64_t size = layout.chunk_size();
  if (!layout.is_2d()) {
    // Rows of b values: one GEMM over any range of rows.
    at::parallel_for(0, layout.num_chunks(), ChunksPerTask(layout),
                     [&](int64_t begin, int64_t end) {
                       Gemm(end - begin, b, b, x + begin * b, b, f_cols, b, out + begin * b, b);
                     });
    return;
  }
  at::parallel_for(0, layout.num_chunks(), ChunksPerTask(layout), [&](int64_t begin, int64_t end) {
    EncodeScratch<T> scratch;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      EncodeChunk(x, layout, chunk, f_rows_t, f_cols, scratch, out + chunk * size);
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
    at::parallel_for(
        0, layout.num_chunks(), ChunksPerTask(layout), [&](int64_t begin, int64_t end) {
          Gemm(end - begin, b, b, coefficients + begin * b, b, f_cols_t, b, x + begin * b, b);
        });
    return;
  }
  const int64_t cols = layout.matrix_shape[1];
  at::parallel_for(0, layout.num_chunks(), ChunksPerTask(layout), [&](int64_t begin, int64_t end) {
    std::vector<T> y(size);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      // Y = F_rows Z; X = Y F_cols^T, written straight into the parameter layout.
      Gemm(a, b, a, f_rows, a, coefficients + chunk * size, b, y.data(), b);
      Gemm(a, b, b, y.data(), b, f_cols_t, b, x + ChunkOrigin(GeometryOf(layout), chunk), cols);
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

// A magnitude as an integer that orders like it: the bits of |v| (IEEE 754 orders non-negative
// floats as their bit patterns), every NaN mapped to infinity's. Integer maxima vectorize;
// float ones would have to respect NaN.
inline uint32_t MagnitudeKey(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return std::min<uint32_t>(bits & 0x7fffffffu, 0x7f800000u);
}

// A value outranks another by larger magnitude, then by lower position; NaN is largest.
struct Ranked {
  uint32_t magnitude;  // MagnitudeKey
  int32_t position;
  bool operator>(const Ranked& o) const {
    return magnitude > o.magnitude || (magnitude == o.magnitude && position < o.position);
  }
};

constexpr int64_t kSelectBlock = 16;

// maxima[b]: the largest MagnitudeKey of v[b * kSelectBlock, (b + 1) * kSelectBlock).
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void BlockMaxima(
    const float* v, int64_t blocks, uint32_t* maxima) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint32_t m = 0;
    for (int64_t j = 0; j < kSelectBlock; ++j)
      m = std::max(m, MagnitudeKey(v[b * kSelectBlock + j]));
    maxima[b] = m;
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void AccumulateRow(
    float* momentum, const float* gradient, float decay, float lr, int64_t n) {
  for (int64_t j = 0; j < n; ++j) momentum[j] = decay * momentum[j] + lr * gradient[j];
}

// The k positions of largest magnitude in one row, sorted; `maxima`, `positions` (n entries)
// and `candidates` are scratch.
void SelectRow(const float* v, int64_t n, int64_t k, std::vector<uint32_t>& maxima,
               std::vector<int32_t>& positions, std::vector<Ranked>& candidates, int64_t* out) {
  const int64_t blocks = (n + kSelectBlock - 1) / kSelectBlock;
  int64_t count = 0;
  if (blocks <= k) {
    for (int64_t j = 0; j < n; ++j) positions[count++] = static_cast<int32_t>(j);
  } else {
    // The k-th largest of the blocks' maxima is at or below the k-th largest magnitude (the k
    // blocks above it each hold a value that large), so every value of the top k is at or
    // above it, and only those blocks can hold one: about k blocks of the row are searched.
    const int64_t full = n / kSelectBlock;
    maxima.resize(2 * blocks);
    BlockMaxima(v, full, maxima.data());
    if (full < blocks) {
      uint32_t m = 0;
      for (int64_t j = full * kSelectBlock; j < n; ++j) m = std::max(m, MagnitudeKey(v[j]));
      maxima[full] = m;
    }
    uint32_t* ordered = maxima.data() + blocks;
    std::copy(maxima.data(), maxima.data() + blocks, ordered);
    std::nth_element(ordered, ordered + (k - 1), ordered + blocks, std::greater<>());
    const uint32_t threshold = ordered[k - 1];
    for (int64_t b = 0; b < blocks; ++b) {
      if (maxima[b] < threshold) continue;
      const int64_t end = std::min(n, (b + 1) * kSelectBlock);
      for (int64_t j = b * kSelectBlock; j < end; ++j) {  // branch-free: the count decides
        positions[count] = static_cast<int32_t>(j);
        count += MagnitudeKey(v[j]) >= threshold;
      }
    }
  }
  candidates.resize(count);
  for (int64_t c = 0; c < count; ++c) {
    candidates[c] = {MagnitudeKey(v[positions[c]]), positions[c]};
  }
  std::nth_element(candidates.begin(), candidates.begin() + (k - 1), candidates.end(),
                   std::greater<>());
  for (int64_t j = 0; j < k; ++j) out[j] = candidates[j].position;
  std::sort(out, out + k);
}

// Finite: no magnitude key (NaN and infinity map to infinity's) reaches infinity's. An integer
// maximum, which vectorizes.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) bool AllFinite(
    const float* v, int64_t n) {
  uint32_t largest = 0;
  for (int64_t j = 0; j < n; ++j) largest = std::max(largest, MagnitudeKey(v[j]));
  return largest < 0x7f800000u;
}

}  // namespace

void TopKByMagnitude(const float* x, int64_t rows, int64_t n, int64_t k, int64_t* indices) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / n), [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> maxima;
    std::vector<int32_t> positions(n);
    std::vector<Ranked> candidates;
    for (int64_t row = begin; row < end; ++row) {
      SelectRow(x + row * n, n, k, maxima, positions, candidates, indices + row * k);
    }
  });
}

void EncodeAccumulateSelect(const std::vector<GradientChunks>& sources, int64_t rows, int64_t n,
                            int64_t k, float decay, float lr, float* momentum, int64_t* indices,
                            uint8_t* row_finite) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / (n * 8)), [&](int64_t begin, int64_t end) {
    EncodeScratch<float> scratch;
    std::vector<uint32_t> maxima;
    std::vector<float> encoded(n);
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
                    scratch, encoded.data());
        finite = AllFinite(encoded.data(), n);
      }
      row_finite[row] = finite;
      if (src.gradient != nullptr && finite) {
        AccumulateRow(v, encoded.data(), decay, lr, n);
      } else if (decay != 1.0f) {
        for (int64_t j = 0; j < n; ++j) v[j] *= decay;
      }
      SelectRow(v, n, k, maxima, positions, candidates, indices + row * k);
    }
  });
}

}  // namespace cpu
}  // namespace demod
