#include "worker/optimizer/cpu_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/sparse_signed_step.h"

namespace demod {
namespace {

ChunkLayout Layout(std::vector<int64_t> shape, int64_t chunk, int64_t topk) {
  return *MakeChunkLayout(shape, chunk, topk);
}

TEST(CpuGemmTest, MatchesMatrixProductForEveryBlockAndTail) {
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {4, 16, 8}, {5, 37, 13}, {64, 64, 64}, {7, 100, 3}, {9, 33, 64}}) {
    at::Tensor a = at::randn({m, k});
    at::Tensor b = at::randn({k, n});
    at::Tensor c = at::empty({m, n});
    cpu::Gemm(m, n, k, a.data_ptr<float>(), k, b.data_ptr<float>(), n, c.data_ptr<float>(), n);
    EXPECT_TRUE(at::allclose(c, at::mm(a, b), 1e-5, 1e-5)) << m << "x" << n << "x" << k;
    at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble), cd = at::empty({m, n}, at::kDouble);
    cpu::Gemm(m, n, k, ad.data_ptr<double>(), k, bd.data_ptr<double>(), n, cd.data_ptr<double>(),
              n);
    EXPECT_TRUE(at::allclose(cd, at::mm(ad, bd), 1e-12, 1e-12));
  }
}

TEST(CpuGemmTest, HonoursLeadingDimensions) {
  // A 3x4 window of a 6x10 matrix times a 4x5 window of an 8x9 one, into a 3x5 window.
  at::Tensor a = at::randn({6, 10}), b = at::randn({8, 9}), c = at::zeros({7, 11});
  cpu::Gemm(3, 5, 4, a.data_ptr<float>() + 2 * 10 + 1, 10, b.data_ptr<float>() + 9 + 2, 9,
            c.data_ptr<float>() + 11 + 3, 11);
  at::Tensor want = at::mm(a.slice(0, 2, 5).slice(1, 1, 5), b.slice(0, 1, 5).slice(1, 2, 7));
  EXPECT_TRUE(at::allclose(c.slice(0, 1, 4).slice(1, 3, 8), want, 1e-5, 1e-5));
  c.slice(0, 1, 4).slice(1, 3, 8).zero_();  // nothing outside the window was written
  EXPECT_TRUE(at::equal(c, at::zeros({7, 11})));
}

at::Tensor TorchTopK(const at::Tensor& x, int64_t k) {
  return std::get<0>(std::get<1>(x.abs().topk(k, -1)).sort(-1));
}

TEST(CpuTopKTest, MatchesTorchTopK) {
  for (auto [rows, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {50, 4096, 32}, {30, 64, 32}, {7, 26, 26}, {10, 3072, 4}, {3, 1, 1}, {100, 512, 1}}) {
    at::Tensor x = at::randn({rows, n});
    at::Tensor got = at::empty({rows, k}, at::kLong);
    cpu::TopKByMagnitude(x.data_ptr<float>(), rows, n, k, got.data_ptr<int64_t>());
    EXPECT_TRUE(at::equal(got, TorchTopK(x, k))) << rows << " " << n << " " << k;
  }
}

TEST(CpuTopKTest, FindsLargeValuesTheSampleMisses) {
  // The sample (every 9th value for n = 4096, k = 32) sees nine huge values and nothing
  // else: its threshold guess keeps only those nine, and the kernel must fall back to the
  // full row to find the other 23.
  at::Tensor x = at::zeros({1, 4096});
  for (int64_t j = 0; j < 9; ++j) x[0][9 * j] = 1000.0;
  for (int64_t j = 0; j < 40; ++j) x[0][2 + 9 * j] = 100.0 + j;
  at::Tensor got = at::empty({1, 32}, at::kLong);
  cpu::TopKByMagnitude(x.data_ptr<float>(), 1, 4096, 32, got.data_ptr<int64_t>());
  EXPECT_TRUE(at::equal(got, TorchTopK(x, 32)));
}

TEST(CpuTopKTest, NanIsLargestAndTiesPreferLowerPositions) {
  at::Tensor x =
      at::tensor({1.f, -3.f, 3.f, std::numeric_limits<float>::quiet_NaN(), 3.f, 2.f}).view({1, 6});
  at::Tensor got = at::empty({1, 3}, at::kLong);
  cpu::TopKByMagnitude(x.data_ptr<float>(), 1, 6, 3, got.data_ptr<int64_t>());
  EXPECT_EQ(got[0][0].item<int64_t>(), 1);
  EXPECT_EQ(got[0][1].item<int64_t>(), 2);
  EXPECT_EQ(got[0][2].item<int64_t>(), 3);
}

// The top k by the kernel's rule, written plainly: larger magnitude first, then lower position.
std::vector<int64_t> StableTopK(const float* v, int64_t n, int64_t k) {
  std::vector<int64_t> order(n);
  for (int64_t j = 0; j < n; ++j) order[j] = j;
  const auto magnitude = [&](int64_t j) {
    return std::isnan(v[j]) ? std::numeric_limits<float>::infinity() : std::fabs(v[j]);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return magnitude(a) > magnitude(b); });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

TEST(CpuTopKTest, ManyTiesKeepTheLowestPositions) {
  // Values from a handful of levels: the k-th largest magnitude is shared by many positions,
  // in the block maxima and among the candidates, and only the lowest of them may be taken.
  for (auto [n, k, levels] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {4096, 32, 3}, {4096, 32, 40}, {4096, 1, 2}, {1000, 17, 5}, {64, 32, 2}, {48, 5, 1}}) {
    at::Tensor x = (at::randint(-levels, levels + 1, {20, n}).to(at::kFloat) * 0.25f);
    x[3].fill_(0.0f);                                       // all equal
    x[4][n - 1] = std::numeric_limits<float>::quiet_NaN();  // largest, last
    x[5].fill_(-std::numeric_limits<float>::infinity());    // all infinite
    at::Tensor got = at::empty({20, k}, at::kLong);
    cpu::TopKByMagnitude(x.data_ptr<float>(), 20, n, k, got.data_ptr<int64_t>());
    for (int64_t r = 0; r < 20; ++r) {
      const std::vector<int64_t> want = StableTopK(x[r].data_ptr<float>(), n, k);
      const int64_t* row = got[r].data_ptr<int64_t>();
      EXPECT_EQ(std::vector<int64_t>(row, row + k), want) << n << " " << k << " row " << r;
    }
  }
}

TEST(CpuPipelineTest, EncodeAccumulateSelectMatchesTheOperatorsAndDropsNonFiniteChunks) {
  const ChunkLayout wide = Layout({128, 64}, 64, 8);  // 2 chunks of 64 x 64
  const ChunkLayout tall = Layout({64, 128}, 64, 8);  // 2 more chunks of 64 x 64
  at::Tensor g_wide = at::randn({128, 64});
  at::Tensor g_tall = at::randn({64, 128});
  g_tall[3][70] = std::numeric_limits<float>::infinity();  // the second chunk of `tall`
  at::Tensor momentum = at::randn({5, 4096});
  const at::Tensor before = momentum.clone();
  at::Tensor f64 = DctBasis(64, at::kCPU, at::kFloat);
  at::Tensor f64t = DctBasisTransposed(64, at::kCPU, at::kFloat);
  std::vector<cpu::GradientChunks> sources(3);
  sources[0] = {g_wide.data_ptr<float>(), &wide, 0, f64t.data_ptr<float>(), f64.data_ptr<float>()};
  sources[1] = {nullptr, &wide, 2, f64t.data_ptr<float>(), f64.data_ptr<float>()};  // no grad
  sources[2] = {g_tall.data_ptr<float>(), &tall, 3, f64t.data_ptr<float>(), f64.data_ptr<float>()};
  at::Tensor indices = at::empty({5, 8}, at::kLong);
  at::Tensor values = at::empty({5, 8});
  at::Tensor finite = at::empty({5}, at::kByte);
  cpu::EncodeAccumulateSelect(sources, 5, 4096, 8, 0.9f, 0.1f, ValueEncoding::kFloat32,
                              momentum.data_ptr<float>(), indices.data_ptr<int64_t>(),
                              values.data_ptr<float>(), finite.data_ptr<uint8_t>());

  at::Tensor encoded = at::zeros({5, 4096});
  encoded.slice(0, 0, 2).copy_(EncodeChunks(g_wide, wide));
  encoded.slice(0, 3, 4).copy_(EncodeChunks(g_tall, tall).slice(0, 0, 1));
  at::Tensor want = before * 0.9f + encoded * 0.1f;
  EXPECT_TRUE(at::equal(finite, at::tensor({1, 1, 1, 1, 0}, at::kByte)));
  EXPECT_TRUE(at::equal(indices, TorchTopK(want, 8)));
  // The selection left the momentum: its values were taken, zeros stay.
  EXPECT_TRUE(at::allclose(values, want.gather(1, indices), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(momentum, want.scatter(1, indices, 0.0), 1e-5, 1e-5));
  EXPECT_TRUE(at::equal(momentum.gather(1, indices), at::zeros({5, 8})));
  const at::Tensor kept = at::ones({5, 4096}, at::kBool).scatter(1, indices, false);
  EXPECT_TRUE(at::allclose(momentum[4].masked_select(kept[4]),
                           (before[4] * 0.9f).masked_select(kept[4])));  // only decayed
}

TEST(CpuPipelineTest, Bf16LeavesItsRoundingInTheMomentum) {
  const ChunkLayout layout = Layout({64, 64}, 64, 16);
  at::Tensor gradient = at::randn({64, 64});
  at::Tensor f64 = DctBasis(64, at::kCPU, at::kFloat);
  at::Tensor f64t = DctBasisTransposed(64, at::kCPU, at::kFloat);
  std::vector<cpu::GradientChunks> sources = {
      {gradient.data_ptr<float>(), &layout, 0, f64t.data_ptr<float>(), f64.data_ptr<float>()}};
  for (ValueEncoding encoding : {ValueEncoding::kBFloat16, ValueEncoding::kSign}) {
    at::Tensor momentum = at::zeros({1, 4096});
    at::Tensor indices = at::empty({1, 16}, at::kLong);
    at::Tensor values = at::empty({1, 16});
    at::Tensor finite = at::empty({1}, at::kByte);
    cpu::EncodeAccumulateSelect(sources, 1, 4096, 16, 0.9f, 1.0f, encoding,
                                momentum.data_ptr<float>(), indices.data_ptr<int64_t>(),
                                values.data_ptr<float>(), finite.data_ptr<uint8_t>());
    const float* val = values.data_ptr<float>();
    int rounded = 0;
    for (int64_t j = 0; j < 16; ++j) {
      const float left = momentum[0][indices[0][j].item<int64_t>()].item<float>();
      if (encoding == ValueEncoding::kSign) {
        EXPECT_EQ(left, 0.0f);
      } else {
        EXPECT_EQ(left, val[j] - QuantizeValue(encoding, val[j]));
        rounded += left != 0.0f;
      }
    }
    if (encoding == ValueEncoding::kBFloat16) {
      EXPECT_GT(rounded, 8);  // few are bf16 values
    }
  }
}

// An aggregate with entries at every third position of each chunk but chunk 1.
AggregateTensor EveryThirdEntry(const ChunkLayout& layout) {
  AggregateTensor agg;
  agg.chunk_offsets.push_back(0);
  for (int64_t c = 0; c < layout.num_chunks(); ++c) {
    for (int64_t j = (c * 7) % 3; c != 1 && j < layout.chunk_size(); j += 3) {
      agg.indices.push_back(static_cast<uint32_t>(j));
      agg.values.push_back(static_cast<float>((c + 1) * 0.5 - j * 0.01));
    }
    agg.chunk_offsets.push_back(agg.indices.size());
  }
  return agg;
}

TEST(CpuDecodeTest, SparseDecodeEqualsDenseDecode) {
  for (const ChunkLayout& layout : {Layout({128, 96}, 64, 32), Layout({200}, 64, 32),
                                    Layout({1, 130}, 64, 32), Layout({48, 20}, 32, 16)}) {
    const AggregateTensor agg = EveryThirdEntry(layout);
    at::Tensor dense = at::zeros({layout.num_chunks(), layout.chunk_size()});
    for (int64_t c = 0; c < layout.num_chunks(); ++c) {
      for (uint64_t e = agg.chunk_offsets[c]; e < agg.chunk_offsets[c + 1]; ++e) {
        dense[c][agg.indices[e]] = agg.values[e];
      }
    }
    at::Tensor sparse = DecodeSparseChunks(agg, layout, at::TensorOptions(at::kFloat));
    EXPECT_TRUE(at::allclose(sparse, DecodeChunks(dense, layout), 1e-5, 1e-5))
        << ShapeToString(layout.matrix_shape);
  }
}

// Several tensors in one pass, split between threads anywhere (at most 1 << 16 elements each):
// every parameter takes exactly the step the operators give, one tensor at a time.
TEST(CpuDecodeTest, FusedSignedStepsMatchTheOperators) {
  const std::vector<ChunkLayout> layouts = {Layout({128, 96}, 64, 32), Layout({200}, 64, 32),
                                            Layout({512, 256}, 64, 32), Layout({1, 130}, 64, 32),
                                            Layout({48, 20}, 32, 16)};
  const double lr = 0.01, keep = 1.0 - lr * 0.1;
  const int threads = at::get_num_threads();
  for (int n_threads : {1, 2, 3}) {
    at::set_num_threads(n_threads);
    std::vector<AggregateTensor> aggregates;
    std::vector<at::Tensor> params, want;
    std::vector<cpu::SparseSignedStep> steps;
    for (const ChunkLayout& layout : layouts) {
      aggregates.push_back(EveryThirdEntry(layout));
      params.push_back(at::randn(layout.matrix_shape));
      at::Tensor direction =
          DecodeSparseChunks(aggregates.back(), layout, at::TensorOptions(at::kFloat)).sign_();
      want.push_back(params.back().clone().mul_(keep).add_(direction, -lr));
    }
    for (size_t t = 0; t < layouts.size(); ++t) {
      const ChunkLayout& layout = layouts[t];
      steps.push_back(
          {aggregates[t].chunk_offsets.data(), aggregates[t].indices.data(),
           aggregates[t].values.data(), &layout,
           DctBasisTransposed(layout.chunk_rows, at::kCPU, at::kFloat).data_ptr<float>(),
           DctBasisTransposed(layout.chunk_cols, at::kCPU, at::kFloat).data_ptr<float>(),
           params[t].data_ptr<float>()});
    }
    cpu::ApplySparseSignedSteps(steps, /*decay=*/true, static_cast<float>(keep),
                                static_cast<float>(-lr));
    for (size_t t = 0; t < layouts.size(); ++t) {
      // Bit for bit, as a GPU worker computes it.
      EXPECT_TRUE(at::equal(params[t], want[t]))
          << n_threads << " threads, " << ShapeToString(layouts[t].matrix_shape);
    }
  }
  at::set_num_threads(threads);
}

TEST(CpuKernelsTest, ResultsDoNotDependOnTheThreadCount) {
  const ChunkLayout layout = Layout({512, 256}, 64, 32);
  at::Tensor x = at::randn({512, 256});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  at::Tensor one = EncodeChunks(x, layout);
  at::Tensor one_back = DecodeChunks(one, layout);
  at::set_num_threads(2);
  at::Tensor two = EncodeChunks(x, layout);
  at::Tensor two_back = DecodeChunks(two, layout);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, two));
  EXPECT_TRUE(at::equal(one_back, two_back));
}

TEST(ChunkedDctTest, AtenPathAgreesWithTheCpuKernels) {
  // bfloat16 input takes the ATen matrix-product path; float the hand-written kernels.
  const ChunkLayout layout = Layout({128, 64}, 64, 8);
  at::Tensor x = at::randn({128, 64}).to(at::kBFloat16);
  at::Tensor aten = EncodeChunks(x, layout).to(at::kFloat);
  at::Tensor kernel = EncodeChunks(x.to(at::kFloat), layout);
  EXPECT_TRUE(at::allclose(aten, kernel, 0.05, 0.1));
}

}  // namespace
}  // namespace demod
