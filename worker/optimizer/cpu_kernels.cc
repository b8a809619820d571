#include "worker/optimizer/cpu_kernels.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

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
                                                                 EncodeScratch<T>& s, T* out,
                                                                 const T* next) {
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
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t j = 0; j < ha; ++j) {
    const T* top = x + j * ldx;
    const T* bottom = x + (a - 1 - j) * ldx;
    if (next != nullptr) {
      for (int64_t c = 0; c < b; c += kLine) {
        __builtin_prefetch(next + j * ldx + c);
        __builtin_prefetch(next + (a - 1 - j) * ldx + c);
      }
    }
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
                  const float* f_cols, EncodeScratch<float>& s, float* out, const float* next) {
  EncodeFoldedChunkImpl(x, ldx, a, b, f_rows_t, f_cols, s, out, next);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void
EncodeFoldedChunk(const double* x, int64_t ldx, int64_t a, int64_t b, const double* f_rows_t,
                  const double* f_cols, EncodeScratch<double>& s, double* out, const double* next) {
  EncodeFoldedChunkImpl(x, ldx, a, b, f_rows_t, f_cols, s, out, next);
}

}  // namespace

// Encodes chunk `chunk` of x into out (chunk_size values).
template <typename T>
void EncodeChunk(const T* x, const ChunkLayout& layout, int64_t chunk, const T* f_rows_t,
                 const T* f_cols, EncodeScratch<T>& s, T* out) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  const ChunkGeometry geometry = GeometryOf(layout);
  const T* origin = x + ChunkOrigin(geometry, chunk);
  if (!layout.is_2d()) {
    Gemm(1, b, b, origin, b, f_cols, b, out, b);
    return;
  }
  const int64_t ldx = layout.matrix_shape[1];
  if (a % 2 == 0 && b % 2 == 0) {
    const T* next =
        chunk + 1 < layout.num_chunks() ? x + ChunkOrigin(geometry, chunk + 1) : nullptr;
    EncodeFoldedChunk(origin, ldx, a, b, f_rows_t, f_cols, s, out, next);
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

// The k-th largest of keys[0, n) (1 <= k <= n) with its bits below `lowest_bit` cleared: a
// lower bound of it, exact for lowest_bit 0. Found bit by bit from the top, as the largest t
// with at least k keys >= t; each bit is a count over all keys, which vectorizes and does not
// branch on the data (an nth_element over a chunk's 256 block maxima did, and cost more than
// the rest of the selection). Every key lies in [min, max], so the bits above the highest one
// where those two differ are known.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) uint32_t
KthLargestKey(const uint32_t* keys, int64_t n, int64_t k, int lowest_bit) {
  uint32_t lo = std::numeric_limits<uint32_t>::max();
  uint32_t hi = 0;
  for (int64_t j = 0; j < n; ++j) {
    lo = std::min(lo, keys[j]);
    hi = std::max(hi, keys[j]);
  }
  const uint32_t below_lowest = (1u << lowest_bit) - 1;
  if (lo == hi) return lo & ~below_lowest;
  const int top = 31 - __builtin_clz(lo ^ hi);
  uint32_t t = top == 31 ? 0 : lo & ~((2u << top) - 1);
  for (int bit = top; bit >= lowest_bit; --bit) {
    const uint32_t candidate = t | (1u << bit);
    uint32_t at_least = 0;
    for (int64_t j = 0; j < n; ++j) at_least += keys[j] >= candidate;
    if (at_least >= k) t = candidate;
  }
  return t & ~below_lowest;
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void AccumulateRow(
    float* momentum, const float* gradient, float decay, float lr, int64_t n) {
  for (int64_t j = 0; j < n; ++j) momentum[j] = decay * momentum[j] + lr * gradient[j];
}

// Appends the keys and positions of the values >= floor in the full blocks whose maximum is
// >= floor, in ascending position order; returns how many (at most blocks * kSelectBlock).
// Only about k of a row's blocks are searched, and of those about 2 values in 16 are taken:
// a store for every value searched cost more than the rest of the selection. So a block's
// values are compared at once into a bit mask, whose set bits are visited; with AVX-512 the
// keys and positions are compressed out of vector registers, and the searched blocks are found
// from a mask over the maxima, without a branch per block.
__attribute__((target("default"))) int64_t GatherCandidates(const float* v, int64_t blocks,
                                                            const uint32_t* maxima, uint32_t floor,
                                                            uint32_t* keys, int32_t* positions) {
  int64_t count = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    if (maxima[b] < floor) continue;
    const float* block = v + b * kSelectBlock;
    uint32_t mask = 0;
    for (int j = 0; j < kSelectBlock; ++j) {
      mask |= static_cast<uint32_t>(MagnitudeKey(block[j]) >= floor) << j;
    }
    for (; mask != 0; mask &= mask - 1) {
      const int j = __builtin_ctz(mask);
      keys[count] = MagnitudeKey(block[j]);
      positions[count] = static_cast<int32_t>(b * kSelectBlock + j);
      ++count;
    }
  }
  return count;
}

__attribute__((target("arch=x86-64-v4"))) int64_t GatherCandidates(const float* v, int64_t blocks,
                                                                   const uint32_t* maxima,
                                                                   uint32_t floor, uint32_t* keys,
                                                                   int32_t* positions) {
  static_assert(kSelectBlock == 16, "one block is one vector of 16 floats");
  const __m512i floor_v = _mm512_set1_epi32(static_cast<int>(floor));
  const __m512i abs_bits = _mm512_set1_epi32(0x7fffffff);
  const __m512i infinity = _mm512_set1_epi32(0x7f800000);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t count = 0;
  for (int64_t first = 0; first < blocks; first += 16) {
    // Which of these 16 blocks reach the floor (the tail of the maxima is masked off).
    const __mmask16 in_range = _cvtu32_mask16(
        blocks - first >= 16 ? 0xffffu : (1u << static_cast<unsigned>(blocks - first)) - 1);
    const __m512i block_maxima = _mm512_maskz_loadu_epi32(in_range, maxima + first);
    uint32_t searched =
        _cvtmask16_u32(_mm512_mask_cmpge_epu32_mask(in_range, block_maxima, floor_v));
    for (; searched != 0; searched &= searched - 1) {
      const int64_t b = first + __builtin_ctz(searched);
      const __m512i bits = _mm512_loadu_si512(v + b * kSelectBlock);
      const __m512i magnitude = _mm512_and_si512(bits, abs_bits);
      // The masked form of the minimum: GCC 12 warns that the plain one's undefined source may
      // be used uninitialized.
      const __m512i key = _mm512_mask_min_epu32(magnitude, 0xffff, magnitude, infinity);
      const __mmask16 taken = _mm512_cmpge_epu32_mask(key, floor_v);
      const __m512i position =
          _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int>(b * kSelectBlock)));
      _mm512_mask_compressstoreu_epi32(keys + count, taken, key);
      _mm512_mask_compressstoreu_epi32(positions + count, taken, position);
      count += __builtin_popcount(_cvtmask16_u32(taken));
    }
  }
  return count;
}

// Scratch of SelectRow: block maxima, and the candidates' keys and positions.
struct SelectScratch {
  std::vector<uint32_t> maxima, keys;
  std::vector<int32_t> positions;
};

// The k positions of largest magnitude in one row, ascending. Larger magnitude wins, then the
// lower position; NaN is largest.
void SelectRow(const float* v, int64_t n, int64_t k, SelectScratch& s, int64_t* out) {
  const int64_t blocks = (n + kSelectBlock - 1) / kSelectBlock;
  s.keys.resize(n);
  s.positions.resize(n);
  int64_t count = 0;
  if (blocks <= k) {
    for (int64_t j = 0; j < n; ++j) {
      s.keys[j] = MagnitudeKey(v[j]);
      s.positions[j] = static_cast<int32_t>(j);
    }
    count = n;
  } else {
    // The k-th largest of the blocks' maxima is at or below the k-th largest magnitude (the k
    // blocks above it each hold a value that large), so every value of the top k is at or
    // above it, and only those blocks can hold one: about k blocks of the row are searched.
    const int64_t full = n / kSelectBlock;
    s.maxima.resize(blocks);
    BlockMaxima(v, full, s.maxima.data());
    if (full < blocks) {
      uint32_t m = 0;
      for (int64_t j = full * kSelectBlock; j < n; ++j) m = std::max(m, MagnitudeKey(v[j]));
      s.maxima[full] = m;
    }
    // Any floor at or below that maximum will do: to 5 bits of mantissa (within 3%) costs a
    // few blocks more to search and far fewer counts than the exact value.
    const uint32_t floor = KthLargestKey(s.maxima.data(), blocks, k, /*lowest_bit=*/18);
    count = GatherCandidates(v, full, s.maxima.data(), floor, s.keys.data(), s.positions.data());
    for (int64_t j = full * kSelectBlock; full < blocks && j < n; ++j) {
      s.keys[count] = MagnitudeKey(v[j]);
      s.positions[count] = static_cast<int32_t>(j);
      count += s.keys[count] >= floor;
    }
  }
  // The candidates are in ascending position order: those above the k-th largest key, then
  // the first of those equal to it, are the answer, already sorted.
  const uint32_t kth = KthLargestKey(s.keys.data(), count, k, /*lowest_bit=*/0);
  int64_t above = 0;
  for (int64_t c = 0; c < count; ++c) above += s.keys[c] > kth;
  int64_t ties_left = k - above;
  int64_t written = 0;
  for (int64_t c = 0; c < count && written < k; ++c) {  // branch-free: the count decides
    const bool tie = s.keys[c] == kth;
    out[written] = s.positions[c];
    written += s.keys[c] > kth || (tie && ties_left > 0);
    ties_left -= tie;
  }
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
    SelectScratch scratch;
    for (int64_t row = begin; row < end; ++row) {
      SelectRow(x + row * n, n, k, scratch, indices + row * k);
    }
  });
}

bool SendsWholeValue(ValueEncoding encoding) {
  return encoding == ValueEncoding::kFloat32 || encoding == ValueEncoding::kSign;
}

float UnsentPart(ValueEncoding encoding, float value) {
  return SendsWholeValue(encoding) ? 0.0f : value - QuantizeValue(encoding, value);
}

void EncodeAccumulateSelect(const std::vector<GradientChunks>& sources, int64_t rows, int64_t n,
                            int64_t k, float decay, float lr, ValueEncoding encoding,
                            float* momentum, int64_t* indices, float* values, uint8_t* row_finite) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / (n * 8)), [&](int64_t begin, int64_t end) {
    EncodeScratch<float> scratch;
    SelectScratch selection;
    std::vector<float> encoded(n);
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
      SelectRow(v, n, k, selection, indices + row * k);
      for (int64_t j = 0; j < k; ++j) {
        float& coefficient = v[indices[row * k + j]];
        values[row * k + j] = coefficient;
        coefficient = UnsentPart(encoding, coefficient);
      }
    }
  });
}

}  // namespace cpu
}  // namespace demod
