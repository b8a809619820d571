#include "worker/optimizer/chunked_dct.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/support/status_matchers.h"

namespace demod {
namespace {

ChunkLayout Layout(std::vector<int64_t> shape, int64_t chunk, int64_t topk = 4) {
  return ValueOrStop(MakeChunkLayout(shape, chunk, topk));
}

TEST(DctBasisTest, IsOrthonormal) {
  for (int64_t n : {1, 2, 7, 26, 64}) {
    at::Tensor f = DctBasis(n, at::kCPU, at::kDouble);
    EXPECT_TRUE(at::allclose(at::mm(f, f.t()), at::eye(n, at::kDouble), 0, 1e-12)) << n;
  }
}

TEST(DctBasisTest, MatchesDctIIOfUnitVectors) {
  // Row j is the orthonormal DCT-II of e_j: F[j][b] = s(b) cos(pi (2j + 1) b / 2n).
  const int64_t n = 8;
  at::Tensor f = DctBasis(n, at::kCPU, at::kDouble);
  EXPECT_NEAR(f[3][0].item<double>(), std::sqrt(1.0 / n), 1e-15);
  EXPECT_NEAR(f[3][5].item<double>(), std::sqrt(2.0 / n) * std::cos(M_PI * 7 * 5 / 16.0), 1e-15);
}

TEST(DctBasisTest, IsCachedPerLengthDeviceAndType) {
  at::Tensor a = DctBasis(16, at::kCPU, at::kFloat);
  at::Tensor b = DctBasis(16, at::kCPU, at::kFloat);
  at::Tensor c = DctBasis(16, at::kCPU, at::kDouble);
  EXPECT_EQ(a.data_ptr(), b.data_ptr());
  EXPECT_NE(a.data_ptr(), c.data_ptr());
}

// The reference's encode: view as [R, a, Q, b], DCT along a and b, lay out as [R, Q, a*b].
at::Tensor ReferenceEncode2d(const at::Tensor& x, const ChunkLayout& l) {
  at::Tensor fa = DctBasis(l.chunk_rows, at::kCPU, at::kDouble);
  at::Tensor fb = DctBasis(l.chunk_cols, at::kCPU, at::kDouble);
  at::Tensor v =
      x.to(at::kDouble).reshape({l.chunk_grid[0], l.chunk_rows, l.chunk_grid[1], l.chunk_cols});
  return at::einsum("ijkl,jb,ld->ikbd", {v, fa, fb}).reshape({l.num_chunks(), l.chunk_size()});
}

TEST(ChunkedDctTest, TwoDimensionalMatchesReferenceLayout) {
  ChunkLayout l = Layout({128, 96}, 64);  // chunks of 64 x 48
  at::Tensor x = at::randn({128, 96}, at::kDouble);
  at::Tensor got = EncodeChunks(x, l);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{4, 64 * 48}));
  EXPECT_TRUE(at::allclose(got, ReferenceEncode2d(x, l), 0, 1e-12));
}

// Chunks with two even sides are encoded by folding their mirrored rows and columns (half the
// multiplications); any odd side takes the plain products. Both must be the DCT.
TEST(ChunkedDctTest, EvenAndOddChunkSidesMatchTheReference) {
  const std::vector<std::vector<int64_t>> shapes = {{128, 64}, {12, 10}, {15, 10}, {12, 9},
                                                    {9, 15},   {2, 2},   {4, 130}};
  for (const auto& shape : shapes) {
    ChunkLayout l = Layout(shape, 64);
    at::Tensor x = at::randn(shape, at::kDouble);
    EXPECT_TRUE(at::allclose(EncodeChunks(x, l), ReferenceEncode2d(x, l), 0, 1e-12))
        << ShapeToString(shape) << ": chunks of " << l.chunk_rows << " x " << l.chunk_cols;
    at::Tensor f = EncodeChunks(x.to(at::kFloat), l).to(at::kDouble);
    EXPECT_TRUE(at::allclose(f, ReferenceEncode2d(x, l), 0, 1e-5)) << ShapeToString(shape);
  }
}

TEST(ChunkedDctTest, RoundTripsEveryRank) {
  const std::vector<std::vector<int64_t>> shapes = {
      {}, {1}, {37}, {96}, {200}, {1, 130}, {64, 64}, {48, 20}, {8, 3, 3, 3}, {4, 6, 5}};
  for (const auto& shape : shapes) {
    ChunkLayout l = Layout(shape, 32);
    at::Tensor x = at::randn(shape, at::kDouble);
    at::Tensor encoded = EncodeChunks(x, l);
    EXPECT_EQ(encoded.size(0), l.num_chunks());
    EXPECT_EQ(encoded.size(1), l.chunk_size());
    at::Tensor back = DecodeChunks(encoded, l).reshape(shape);
    EXPECT_TRUE(at::allclose(back, x, 0, 1e-12)) << ShapeToString(shape);
    // Orthonormal: energy is preserved.
    EXPECT_NEAR(encoded.pow(2).sum().item<double>(), x.pow(2).sum().item<double>(), 1e-9);
  }
}

TEST(ChunkedDctTest, ConstantChunkHasOnlyADcCoefficient) {
  ChunkLayout l = Layout({8}, 4);
  at::Tensor encoded = EncodeChunks(at::ones({8}, at::kDouble), l);
  EXPECT_NEAR(encoded[0][0].item<double>(), 2.0, 1e-12);  // sqrt(1/4) * 4
  EXPECT_NEAR(encoded.abs().sum().item<double>(), 4.0, 1e-12);
}

TEST(ChunkedDctTest, FloatAndDoubleAgree) {
  ChunkLayout l = Layout({64, 128}, 64);
  at::Tensor x = at::randn({64, 128}, at::kDouble);
  at::Tensor f = EncodeChunks(x.to(at::kFloat), l);
  EXPECT_EQ(f.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(f.to(at::kDouble), EncodeChunks(x, l), 0, 1e-5));
}

}  // namespace
}  // namespace demod
