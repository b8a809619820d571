// The CUDA kernels' own code (cuda/kernel_bodies.h) on the CPU, with the arguments staged as
// the glue stages them (sparse_step_staging.h): a block is stood in for by running each phase
// for every thread in turn, a barrier by finishing the phase. It must give exactly the CPU
// routines' bits for any number of blocks and threads. (What only a GPU shows, the intrinsics
// and real concurrency, demod-device-check's part 3 checks.) Compiled with -ffp-contract=off,
// as the CPU routines are.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "worker/optimizer/adamw_update.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/cpu_kernels.h"
#include "worker/optimizer/cuda/kernel_bodies.h"
#include "worker/optimizer/sparse_signed_step.h"
#include "worker/optimizer/sparse_step_staging.h"
#include "worker/programs/kernel_check.h"

namespace demod {
namespace {

// The kernel's grid, one block after another. With `decoded`, also writes each chunk's decoded
// values there, at the parameters' offsets (one tensor only).
void RunSparseSignedStepsKernel(const cuda::SparseSignedSteps& s, bool decay, float keep,
                                float step, int blocks, int threads, float* decoded = nullptr) {
  // Scratch starts as NaN: a value of y that the phases did not set would show.
  std::vector<float> scratch(cuda::ChunkScratchFloats(s), std::numeric_limits<float>::quiet_NaN());
  int n_used = -1;
  for (int block = 0; block < blocks; ++block) {
    for (int64_t chunk = block; chunk < s.total_chunks; chunk += blocks) {
      cuda::ChunkWork w = cuda::WorkOn(s, chunk, scratch.data());
      w.scratch.n_used = &n_used;
      for (int t = 0; t < threads; ++t) cuda::ClearFlags(w, t, threads);
      for (int t = 0; t < threads; ++t) cuda::FlagColumns(s, w, t, threads);
      cuda::ListColumns(w);
      const int cols_used = n_used;
      for (int t = 0; t < threads; ++t) cuda::ClearY(w, cols_used, t, threads);
      for (int t = 0; t < threads; ++t) cuda::AccumulateY(s, w, t, threads);
      if (decoded != nullptr) {
        const int64_t offset = w.origin - s.tensors[0].param;
        for (int64_t r = 0; r < w.a; ++r) {
          for (int64_t c = 0; c < w.b; ++c) {
            decoded[offset + r * w.tensor->geometry.cols + c] =
                cuda::DecodedElement(w, cols_used, r, c);
          }
        }
      }
      for (int t = 0; t < threads; ++t) {
        cuda::StepElements(w, cols_used, decay, keep, step, t, threads);
      }
    }
  }
}

ChunkLayout Layout(std::vector<int64_t> shape, int64_t chunk, int64_t topk) {
  return *MakeChunkLayout(shape, chunk, topk);
}

TEST(CudaKernelBodiesTest, SparseSignedStepsMatchTheCpuRoutineForAnyGrid) {
  const std::vector<ChunkLayout> layouts = {Layout({128, 192}, 64, 32), Layout({200}, 64, 16),
                                            Layout({30, 7}, 64, 4),     Layout({3, 5, 8}, 16, 6),
                                            Layout({96, 40}, 32, 8),    Layout({1, 130}, 64, 32)};
  std::mt19937_64 rng(3);
  std::vector<AggregateTensor> aggregates;
  std::vector<at::Tensor> start;
  for (const ChunkLayout& layout : layouts) {
    aggregates.push_back(RandomMergedAggregate(layout, 5, AggregateValues::kFloat32, rng));
    start.push_back(at::randn(layout.matrix_shape));
  }
  std::vector<at::Tensor> want;
  std::vector<cpu::SparseSignedStep> cpu_steps;
  for (size_t t = 0; t < layouts.size(); ++t) {
    want.push_back(start[t].clone());
    cpu_steps.push_back(
        {aggregates[t].chunk_offsets.data(), aggregates[t].indices.data(),
         aggregates[t].values.data(), &layouts[t],
         DctBasisTransposed(layouts[t].chunk_rows, at::kCPU, at::kFloat).data_ptr<float>(),
         DctBasisTransposed(layouts[t].chunk_cols, at::kCPU, at::kFloat).data_ptr<float>(),
         want.back().data_ptr<float>()});
  }
  cpu::ApplySparseSignedSteps(cpu_steps, /*decay=*/true, 0.999f, -0.01f);

  for (const auto& [blocks, threads] :
       std::vector<std::pair<int, int>>{{1, 1}, {3, 7}, {64, 256}}) {
    std::vector<at::Tensor> params;
    std::vector<StagedTensor> staged;
    for (size_t t = 0; t < layouts.size(); ++t) {
      params.push_back(start[t].clone());
      staged.push_back(
          {&aggregates[t], &layouts[t], params.back().data_ptr<float>(),
           DctBasisTransposed(layouts[t].chunk_rows, at::kCPU, at::kFloat).data_ptr<float>(),
           DctBasisTransposed(layouts[t].chunk_cols, at::kCPU, at::kFloat).data_ptr<float>()});
    }
    // The "device" is the staging buffer itself: its pointers are valid on the host.
    std::vector<uint64_t> buffer((SparseSignedStepsBytes(staged) + 7) / 8);
    uint8_t* bytes = reinterpret_cast<uint8_t*>(buffer.data());
    const cuda::SparseSignedSteps steps = StageSparseSignedSteps(staged, bytes, bytes);
    RunSparseSignedStepsKernel(steps, /*decay=*/true, 0.999f, -0.01f, blocks, threads);
    for (size_t t = 0; t < layouts.size(); ++t) {
      EXPECT_TRUE(at::equal(params[t], want[t]))
          << blocks << " blocks of " << threads << " threads, "
          << ShapeToString(layouts[t].matrix_shape);
    }
  }
}

// The parameters see only the signs; the decoded values show the order of every sum.
TEST(CudaKernelBodiesTest, DecodedValuesMatchTheCpuDecodeBitForBit) {
  std::mt19937_64 rng(5);
  for (const ChunkLayout& layout : {Layout({128, 192}, 64, 32), Layout({200}, 64, 16),
                                    Layout({30, 7}, 64, 4), Layout({96, 40}, 32, 8)}) {
    const AggregateTensor agg = RandomMergedAggregate(layout, 6, AggregateValues::kFloat32, rng);
    at::Tensor want = at::empty(layout.matrix_shape);
    const float* f_rows_t =
        DctBasisTransposed(layout.chunk_rows, at::kCPU, at::kFloat).data_ptr<float>();
    const float* f_cols_t =
        DctBasisTransposed(layout.chunk_cols, at::kCPU, at::kFloat).data_ptr<float>();
    cpu::DecodeSparseChunks(agg.chunk_offsets.data(), agg.indices.data(), agg.values.data(), layout,
                            f_rows_t, f_cols_t, want.data_ptr<float>());
    at::Tensor param = at::zeros(layout.matrix_shape);
    at::Tensor decoded = at::full(layout.matrix_shape, std::nanf(""));
    const std::vector<StagedTensor> staged = {
        {&agg, &layout, param.data_ptr<float>(), f_rows_t, f_cols_t}};
    std::vector<uint64_t> buffer((SparseSignedStepsBytes(staged) + 7) / 8);
    uint8_t* bytes = reinterpret_cast<uint8_t*>(buffer.data());
    RunSparseSignedStepsKernel(StageSparseSignedSteps(staged, bytes, bytes), false, 1.0f, 0.0f, 5,
                               32, decoded.data_ptr<float>());
    EXPECT_TRUE(at::equal(decoded, want)) << ShapeToString(layout.matrix_shape);
  }
}

TEST(CudaKernelBodiesTest, AdamWMatchesTheCpuRoutine) {
  for (const ChunkLayout& layout : {Layout({128, 192}, 64, 1 << 30), Layout({200}, 64, 1 << 30),
                                    Layout({30, 7}, 16, 1 << 30), Layout({3, 5, 8}, 16, 1 << 30)}) {
    const rounded::AdamWScalars s = AdamWScalarsFor(3e-3, 0.9, 0.95, 1e-8, 0.1, 5);
    const at::Tensor g = at::randn({layout.num_elements()}) * 1e-2;
    const at::Tensor p0 = at::randn(layout.matrix_shape),
                     m0 = at::randn(layout.matrix_shape) * 1e-2,
                     v0 = at::rand(layout.matrix_shape) * 1e-4;
    at::Tensor p = p0.clone(), m = m0.clone(), v = v0.clone();
    cpu::ApplyAdamW(g.data_ptr<float>(), layout, s, p.data_ptr<float>(), m.data_ptr<float>(),
                    v.data_ptr<float>());
    at::Tensor kp = p0.clone(), km = m0.clone(), kv = v0.clone();
    const ChunkGeometry geometry = cpu::GeometryOf(layout);
    for (int64_t position = 0; position < layout.num_elements(); ++position) {
      cuda::AdamWAt(position, g.data_ptr<float>(), geometry, s, kp.data_ptr<float>(),
                    km.data_ptr<float>(), kv.data_ptr<float>());
    }
    EXPECT_TRUE(at::equal(kp, p)) << ShapeToString(layout.matrix_shape);
    EXPECT_TRUE(at::equal(km, m)) << ShapeToString(layout.matrix_shape);
    EXPECT_TRUE(at::equal(kv, v)) << ShapeToString(layout.matrix_shape);
  }
}

}  // namespace
}  // namespace demod
