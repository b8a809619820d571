// Register-blocked matrix products for the CPU kernels (internal to worker/optimizer): every
// element of C is one sum over p = 0..k-1 of A[i, p] * B[p, j], accumulated in that order, so a
// file compiled without floating-point contraction gets products and sums rounded one by one.
// Templates in an anonymous namespace: each file instantiates them under its own flags.
#ifndef DEMOD_WORKER_OPTIMIZER_GEMM_BLOCKS_H_
#define DEMOD_WORKER_OPTIMIZER_GEMM_BLOCKS_H_

#include <cstdint>

namespace demod {
namespace cpu {
namespace {  // NOLINT(build/namespaces): per-file instantiations, see above

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

// A[r, p]: row-major with leading dimension lda, or, with kTransposedA, stored as A^T
// (A[r, p] at a[p * lda + r]), which spares a caller holding A^T the transpose.
template <bool kTransposedA, typename T>
inline __attribute__((always_inline)) T ElementOfA(const T* a, int64_t lda, int64_t r, int64_t p) {
  return kTransposedA ? a[p * lda + r] : a[r * lda + p];
}

// B's rows: row p at b + p * ldb, or, gathered, at rows[p] (the rows a caller picked out of a
// larger matrix, used in place instead of copied together). `col`: the first column used.
template <typename T>
struct StridedRows {
  const T* b;
  int64_t ldb;
  const T* row(int64_t p, int64_t col) const { return b + p * ldb + col; }
};
template <typename T>
struct GatheredRows {
  const T* const* rows;
  const T* row(int64_t p, int64_t col) const { return rows[p] + col; }
};

// A kRows x (kVecs vectors) block of C at columns [col, ...), accumulated in registers over
// the whole K.
template <typename T, int kRows, int kVecs, bool kTransposedA, typename Rows>
inline __attribute__((always_inline)) void GemmBlock(int64_t k, const T* a, int64_t lda,
                                                     const Rows& b, int64_t col, T* c,
                                                     int64_t ldc) {
  using V = typename VecOf<T>::type;
  constexpr int kLanes = sizeof(V) / sizeof(T);
  V acc[kRows][kVecs] = {};
  for (int64_t p = 0; p < k; ++p) {
    V bv[kVecs];
    const T* b_row = b.row(p, col);
    for (int v = 0; v < kVecs; ++v) __builtin_memcpy(&bv[v], b_row + v * kLanes, sizeof(V));
    for (int r = 0; r < kRows; ++r) {
      const T ar = ElementOfA<kTransposedA>(a, lda, r, p);
      for (int v = 0; v < kVecs; ++v) acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVecs; ++v) {
      __builtin_memcpy(c + r * ldc + v * kLanes, &acc[r][v], sizeof(V));
    }
  }
}

// Columns [col, col + n) that do not fill a vector.
template <typename T, int kRows, bool kTransposedA, typename Rows>
inline __attribute__((always_inline)) void GemmTail(int64_t n, int64_t k, const T* a, int64_t lda,
                                                    const Rows& b, int64_t col, T* c, int64_t ldc) {
  for (int r = 0; r < kRows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      T sum = 0;
      for (int64_t p = 0; p < k; ++p)
        sum += ElementOfA<kTransposedA>(a, lda, r, p) * b.row(p, col)[j];
      c[r * ldc + j] = sum;
    }
  }
}

template <typename T, int kRows, bool kTransposedA, typename Rows>
inline __attribute__((always_inline)) void GemmRows(int64_t n, int64_t k, const T* a, int64_t lda,
                                                    const Rows& b, T* c, int64_t ldc) {
  constexpr int kLanes = sizeof(typename VecOf<T>::type) / sizeof(T);
  int64_t j = 0;
  for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
    GemmBlock<T, kRows, 2, kTransposedA>(k, a, lda, b, j, c + j, ldc);
  }
  for (; j + kLanes <= n; j += kLanes) {
    GemmBlock<T, kRows, 1, kTransposedA>(k, a, lda, b, j, c + j, ldc);
  }
  if (j < n) GemmTail<T, kRows, kTransposedA>(n - j, k, a, lda, b, j, c + j, ldc);
}

// C = A B for A m x k, B k x n (its rows as `b` gives them), C m x n (see ElementOfA for A's
// layout).
template <typename T, bool kTransposedA = false, typename Rows>
inline __attribute__((always_inline)) void GemmImpl(int64_t m, int64_t n, int64_t k, const T* a,
                                                    int64_t lda, const Rows& b, T* c, int64_t ldc) {
  const int64_t next_row = kTransposedA ? 1 : lda;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    GemmRows<T, 4, kTransposedA>(n, k, a + i * next_row, lda, b, c + i * ldc, ldc);
  }
  for (; i < m; ++i) GemmRows<T, 1, kTransposedA>(n, k, a + i * next_row, lda, b, c + i * ldc, ldc);
}

// The same with B row-major, leading dimension ldb.
template <typename T, bool kTransposedA = false>
inline __attribute__((always_inline)) void GemmImpl(int64_t m, int64_t n, int64_t k, const T* a,
                                                    int64_t lda, const T* b, int64_t ldb, T* c,
                                                    int64_t ldc) {
  GemmImpl<T, kTransposedA>(m, n, k, a, lda, StridedRows<T>{b, ldb}, c, ldc);
}

}  // namespace
}  // namespace cpu
}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_GEMM_BLOCKS_H_
