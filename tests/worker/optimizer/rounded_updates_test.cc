// The CPU updates that CUDA workers must reproduce bit for bit (sparse_signed_step.h,
// adamw_update.h), checked against references written straight from the documented order of
// operations. Every product and sum of a reference goes through a volatile float, so the
// compiler cannot fuse or reorder them: equality here pins the order the CUDA kernels follow.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "worker/optimizer/adamw_update.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/cpu_kernels.h"
#include "worker/optimizer/sparse_signed_step.h"
#include "worker/programs/kernel_check.h"

namespace demod {
namespace {

float Product(float a, float b) {
  volatile float p = a * b;
  return p;
}

float Sum(float a, float b) {
  volatile float s = a + b;
  return s;
}

float Quotient(float a, float b) {
  volatile float q = a / b;
  return q;
}

ChunkLayout Layout(std::vector<int64_t> shape, int64_t chunk, int64_t topk) {
  return *MakeChunkLayout(shape, chunk, topk);
}

const std::vector<ChunkLayout>& Layouts() {
  static const std::vector<ChunkLayout> layouts = {
      Layout({128, 192}, 64, 32), Layout({96, 40}, 32, 8), Layout({200}, 64, 16),
      Layout({1, 130}, 64, 32),   Layout({30, 7}, 64, 4),  Layout({3, 5, 8}, 16, 6)};
  return layouts;
}

AggregateTensor RandomAggregate(const ChunkLayout& layout, int contributors, std::mt19937_64& rng) {
  return RandomMergedAggregate(layout, contributors, AggregateValues::kFloat32, rng);
}

// The decoded chunk, as sparse_signed_step.h writes it; `columns_descending` reverses the order
// of the outer sum, to show that the comparison can see the order.
std::vector<float> ReferenceChunk(const AggregateTensor& agg, const ChunkLayout& layout,
                                  int64_t chunk, bool columns_descending = false) {
  const int64_t a = layout.chunk_rows, b = layout.chunk_cols;
  const at::Tensor f_rows = DctBasis(a, at::kCPU, at::kFloat);
  const at::Tensor f_cols = DctBasis(b, at::kCPU, at::kFloat);
  const float* fr = f_rows.data_ptr<float>();  // F_r[r, i] at r * a + i
  const float* fc = f_cols.data_ptr<float>();
  std::vector<float> y(a * b, 0.0f);
  std::vector<bool> used(b, false);
  for (uint64_t e = agg.chunk_offsets[chunk]; e < agg.chunk_offsets[chunk + 1]; ++e) {
    const int64_t i = agg.indices[e] / b, j = agg.indices[e] % b;
    used[j] = true;
    for (int64_t r = 0; r < a; ++r)
      y[r * b + j] = Sum(y[r * b + j], Product(agg.values[e], fr[r * a + i]));
  }
  std::vector<int64_t> columns;
  for (int64_t j = 0; j < b; ++j) {
    if (used[j]) columns.push_back(j);
  }
  if (columns_descending) std::reverse(columns.begin(), columns.end());
  std::vector<float> x(a * b, 0.0f);
  for (int64_t r = 0; r < a; ++r) {
    for (int64_t c = 0; c < b; ++c) {
      for (int64_t j : columns)
        x[r * b + c] = Sum(x[r * b + c], Product(y[r * b + j], fc[c * b + j]));
    }
  }
  return x;
}

float ReferenceSignedStep(float p, float x, bool decay, float keep, float step) {
  const float sign = static_cast<float>((x > 0.0f) - (x < 0.0f));
  return Sum(decay ? Product(p, keep) : p, Product(step, sign));
}

at::Tensor ReferenceDecode(const AggregateTensor& agg, const ChunkLayout& layout,
                           bool columns_descending = false) {
  at::Tensor x = at::zeros(layout.matrix_shape);
  const ChunkGeometry g = cpu::GeometryOf(layout);
  for (int64_t chunk = 0; chunk < layout.num_chunks(); ++chunk) {
    const std::vector<float> block = ReferenceChunk(agg, layout, chunk, columns_descending);
    float* origin = x.data_ptr<float>() + ChunkOrigin(g, chunk);
    for (int64_t r = 0; r < layout.chunk_rows; ++r) {
      for (int64_t c = 0; c < layout.chunk_cols; ++c) {
        origin[r * g.cols + c] = block[r * layout.chunk_cols + c];
      }
    }
  }
  return x;
}

at::Tensor Decode(const AggregateTensor& agg, const ChunkLayout& layout) {
  at::Tensor x = at::empty(layout.matrix_shape);
  cpu::DecodeSparseChunks(
      agg.chunk_offsets.data(), agg.indices.data(), agg.values.data(), layout,
      DctBasisTransposed(layout.chunk_rows, at::kCPU, at::kFloat).data_ptr<float>(),
      DctBasisTransposed(layout.chunk_cols, at::kCPU, at::kFloat).data_ptr<float>(),
      x.data_ptr<float>());
  return x;
}

TEST(RoundedUpdatesTest, SparseDecodeFollowsTheDocumentedOrderBitForBit) {
  std::mt19937_64 rng(7);
  int64_t order_visible = 0;
  for (const ChunkLayout& layout : Layouts()) {
    for (int contributors : {1, 3, 16}) {
      const AggregateTensor agg = RandomAggregate(layout, contributors, rng);
      const at::Tensor decoded = Decode(agg, layout);
      EXPECT_TRUE(at::equal(decoded, ReferenceDecode(agg, layout)))
          << ShapeToString(layout.matrix_shape) << ", " << contributors << " contributors";
      order_visible += at::ne(decoded, ReferenceDecode(agg, layout, /*columns_descending=*/true))
                           .sum()
                           .item<int64_t>();
    }
  }
  EXPECT_GT(order_visible, 0) << "the data cannot tell one order of summation from another";
}

TEST(RoundedUpdatesTest, SparseSignedStepsFollowTheDocumentedOrderOnAnyThreadCount) {
  std::mt19937_64 rng(11);
  const float keep = 0.999f, step = -0.01f;
  std::vector<AggregateTensor> aggregates;
  std::vector<at::Tensor> start, want;
  for (const ChunkLayout& layout : Layouts()) {
    aggregates.push_back(RandomAggregate(layout, 4, rng));
    start.push_back(at::randn(layout.matrix_shape));
    const at::Tensor x = ReferenceDecode(aggregates.back(), layout);
    at::Tensor p = start.back().clone();
    for (int64_t e = 0; e < p.numel(); ++e) {
      p.data_ptr<float>()[e] =
          ReferenceSignedStep(p.data_ptr<float>()[e], x.data_ptr<float>()[e], true, keep, step);
    }
    want.push_back(p);
  }
  const int threads = at::get_num_threads();
  for (int n_threads : {1, 3}) {
    at::set_num_threads(n_threads);
    std::vector<at::Tensor> params;
    std::vector<cpu::SparseSignedStep> steps;
    for (size_t t = 0; t < Layouts().size(); ++t) {
      const ChunkLayout& layout = Layouts()[t];
      params.push_back(start[t].clone());
      steps.push_back(
          {aggregates[t].chunk_offsets.data(), aggregates[t].indices.data(),
           aggregates[t].values.data(), &layout,
           DctBasisTransposed(layout.chunk_rows, at::kCPU, at::kFloat).data_ptr<float>(),
           DctBasisTransposed(layout.chunk_cols, at::kCPU, at::kFloat).data_ptr<float>(),
           params.back().data_ptr<float>()});
    }
    cpu::ApplySparseSignedSteps(steps, /*decay=*/true, keep, step);
    for (size_t t = 0; t < params.size(); ++t) {
      EXPECT_TRUE(at::equal(params[t], want[t]))
          << n_threads << " threads, " << ShapeToString(Layouts()[t].matrix_shape);
    }
  }
  at::set_num_threads(threads);
}

TEST(RoundedUpdatesTest, AdamWFollowsTheDocumentedOrderOnAnyThreadCount) {
  const int threads = at::get_num_threads();
  for (const ChunkLayout& layout : Layouts()) {
    const at::Tensor gradient = at::randn({layout.num_elements()}) * 0.01;  // chunk order
    const at::Tensor p0 = at::randn(layout.matrix_shape);
    const at::Tensor m0 = at::randn(layout.matrix_shape) * 0.01;
    const at::Tensor v0 = at::rand(layout.matrix_shape) * 1e-4;
    for (int64_t step : {1, 7}) {
      const rounded::AdamWScalars s = AdamWScalarsFor(3e-3, 0.9, 0.95, 1e-8, 0.1, step);
      at::Tensor p = p0.clone(), m = m0.clone(), v = v0.clone();
      const ChunkGeometry g = cpu::GeometryOf(layout);
      for (int64_t position = 0; position < layout.num_elements(); ++position) {
        const int64_t at = ChunkOrderToOffset(g, position);
        float& pe = p.data_ptr<float>()[at];
        float& me = m.data_ptr<float>()[at];
        float& ve = v.data_ptr<float>()[at];
        const float ge = gradient.data_ptr<float>()[position];
        me = Sum(Product(me, s.beta1), Product(s.one_minus_beta1, ge));
        ve = Sum(Product(ve, s.beta2), Product(Product(s.one_minus_beta2, ge), ge));
        const float denominator = Sum(std::sqrt(Quotient(ve, s.bias_correction2)), s.eps);
        const float update = Quotient(Quotient(me, s.bias_correction1), denominator);
        pe = Sum(Product(pe, s.keep), -Product(s.lr, update));
      }
      for (int n_threads : {1, 3}) {
        at::set_num_threads(n_threads);
        at::Tensor cp = p0.clone(), cm = m0.clone(), cv = v0.clone();
        cpu::ApplyAdamW(gradient.data_ptr<float>(), layout, s, cp.data_ptr<float>(),
                        cm.data_ptr<float>(), cv.data_ptr<float>());
        const std::string where = ShapeToString(layout.matrix_shape) + ", step " +
                                  std::to_string(step) + ", " + std::to_string(n_threads) +
                                  " threads";
        EXPECT_TRUE(at::equal(cp, p)) << where;
        EXPECT_TRUE(at::equal(cm, m)) << where;
        EXPECT_TRUE(at::equal(cv, v)) << where;
      }
    }
  }
  at::set_num_threads(threads);
}

}  // namespace
}  // namespace demod
