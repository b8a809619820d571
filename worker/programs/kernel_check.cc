#include "worker/programs/kernel_check.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/optimizer/adamw_update.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/sparse_signed_step.h"
#if defined(DEMOD_WITH_CUDA)
#include "worker/optimizer/cuda_updates.h"
#endif

namespace demod {
namespace {

#if defined(DEMOD_WITH_CUDA)

const char* const kEncodings[] = {"f32", "bf16", "sign-mean"};

// A random tensor shape: 1-D, 2-D or 3-D, with sides that chunk evenly or not at all.
std::vector<int64_t> RandomShape(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> rank(1, 3);
  std::uniform_int_distribution<int64_t> side(1, 300);
  switch (rank(rng)) {
    case 1:
      return {side(rng) * side(rng) / 4 + 1};
    case 2:
      return {side(rng), side(rng)};
    default:
      return {side(rng) / 20 + 1, side(rng) / 10 + 1, side(rng) / 10 + 1};
  }
}

int64_t BitsDiffer(const at::Tensor& a, const at::Tensor& b) {
  return at::ne(a.view(at::kInt), b.to(at::kCPU).contiguous().view(at::kInt)).sum().item<int64_t>();
}

struct SignedStepCase {
  std::vector<ChunkLayout> layouts;
  std::vector<AggregateTensor> aggregates;
  std::vector<at::Tensor> params;  // on the CPU, before the step
};

std::vector<cpu::SparseSignedStep> CpuSteps(const SignedStepCase& c, std::vector<at::Tensor>& p) {
  std::vector<cpu::SparseSignedStep> steps;
  for (size_t t = 0; t < c.layouts.size(); ++t) {
    const ChunkLayout& layout = c.layouts[t];
    steps.push_back({c.aggregates[t].chunk_offsets.data(), c.aggregates[t].indices.data(),
                     c.aggregates[t].values.data(), &layout,
                     DctBasisTransposed(layout.chunk_rows, at::kCPU, at::kFloat).data_ptr<float>(),
                     DctBasisTransposed(layout.chunk_cols, at::kCPU, at::kFloat).data_ptr<float>(),
                     p[t].data_ptr<float>()});
  }
  return steps;
}

std::vector<CudaSignedSteps::Tensor> CudaSteps(const SignedStepCase& c,
                                               std::vector<at::Tensor>& p) {
  std::vector<CudaSignedSteps::Tensor> steps;
  for (size_t t = 0; t < c.layouts.size(); ++t) {
    steps.push_back({&c.aggregates[t], &c.layouts[t], p[t]});
  }
  return steps;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

absl::StatusOr<bool> CheckSignedSteps(const KernelCheckOptions& options, std::mt19937_64& rng,
                                      CudaSignedSteps& cuda) {
  const at::Device gpu(at::kCUDA, 0);
  std::uniform_int_distribution<int> chunk_pick(0, 4), topk(1, 64), encoding_pick(0, 2),
      contributors_pick(0, 6), tensors_pick(1, 4);
  const int64_t chunks[] = {8, 16, 32, 64, 128};
  const int contributor_counts[] = {1, 2, 3, 4, 8, 32, 256};
  int64_t failed = 0;
  for (int n = 0; n < options.cases; ++n) {
    SignedStepCase c;
    const int encoding = encoding_pick(rng);
    const int contributors = contributor_counts[contributors_pick(rng)];
    const int64_t chunk = chunks[chunk_pick(rng)];
    const int64_t k = topk(rng);
    for (int t = tensors_pick(rng); t > 0; --t) {
      DEMOD_ASSIGN_OR_RETURN(ChunkLayout layout, MakeChunkLayout(RandomShape(rng), chunk, k));
      c.aggregates.push_back(
          RandomMergedAggregate(layout, contributors, static_cast<AggregateValues>(encoding), rng));
      c.params.push_back(at::randn(layout.matrix_shape));
      c.layouts.push_back(std::move(layout));
    }
    const bool decay = n % 2 == 0;
    const float keep = 1.0f - 1e-4f * (n % 7), step = -1e-3f * (1 + n % 3);
    std::vector<at::Tensor> on_cpu, on_gpu;
    for (const at::Tensor& p : c.params) {
      on_cpu.push_back(p.clone());
      on_gpu.push_back(p.to(gpu));
    }
    cpu::ApplySparseSignedSteps(CpuSteps(c, on_cpu), decay, keep, step);
    DEMOD_RETURN_IF_ERROR(cuda.Apply(CudaSteps(c, on_gpu), decay, keep, step));
    int64_t differ = 0, elements = 0;
    for (size_t t = 0; t < on_cpu.size(); ++t) {
      differ += BitsDiffer(on_cpu[t], on_gpu[t]);
      elements += on_cpu[t].numel();
    }
    if (differ > 0) {
      ++failed;
      std::printf(
          "signed step case %d: %lld of %lld elements differ (%s, %d contributors, chunk "
          "%lld, topk %lld, first shape %s)\n",
          n, static_cast<long long>(differ), static_cast<long long>(elements), kEncodings[encoding],
          contributors, static_cast<long long>(chunk), static_cast<long long>(k),
          ShapeToString(c.layouts[0].matrix_shape).c_str());
    }
  }
  std::printf("sparse signed step, CPU against CUDA: %d cases, %lld with differing bits\n",
              options.cases, static_cast<long long>(failed));
  return failed == 0;
}

absl::StatusOr<bool> CheckAdamW(const KernelCheckOptions& options, std::mt19937_64& rng) {
  const at::Device gpu(at::kCUDA, 0);
  std::uniform_int_distribution<int> chunk_pick(0, 4), step_pick(1, 1000);
  const int64_t chunks[] = {8, 16, 32, 64, 128};
  int64_t failed = 0;
  for (int n = 0; n < options.cases; ++n) {
    DEMOD_ASSIGN_OR_RETURN(ChunkLayout layout,
                           MakeChunkLayout(RandomShape(rng), chunks[chunk_pick(rng)], 1 << 30));
    const rounded::AdamWScalars s = AdamWScalarsFor(1e-3 * (1 + n % 5), 0.9, 0.95, 1e-8,
                                                    n % 2 == 0 ? 0.1 : 0.0, step_pick(rng));
    const at::Tensor g = at::randn({layout.num_elements()}) * 1e-2;
    std::vector<float> gradient(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
    at::Tensor p = at::randn(layout.matrix_shape), m = at::randn(layout.matrix_shape) * 1e-2,
               v = at::rand(layout.matrix_shape) * 1e-4;
    at::Tensor p_gpu = p.to(gpu), m_gpu = m.to(gpu), v_gpu = v.to(gpu);
    cpu::ApplyAdamW(gradient.data(), layout, s, p.data_ptr<float>(), m.data_ptr<float>(),
                    v.data_ptr<float>());
    DEMOD_RETURN_IF_ERROR(ApplyAdamWOnCuda(gradient, layout, s, p_gpu, m_gpu, v_gpu));
    const int64_t differ = BitsDiffer(p, p_gpu) + BitsDiffer(m, m_gpu) + BitsDiffer(v, v_gpu);
    if (differ > 0) {
      ++failed;
      std::printf("adamw case %d: %lld elements of p, m, v differ (shape %s)\n", n,
                  static_cast<long long>(differ), ShapeToString(layout.matrix_shape).c_str());
    }
  }
  std::printf("dense AdamW, CPU against CUDA: %d cases, %lld with differing bits\n", options.cases,
              static_cast<long long>(failed));
  return failed == 0;
}

// The parameter shapes of a GPT of about 125M parameters (d_model 768, 12 layers, vocabulary
// 50304, context 1024), as DeMo chunks them (chunk 64, topk 32), with 4 contributors.
// True when the CPU and the CUDA results still agree bit for bit after the timed steps.
absl::StatusOr<bool> TimeOn125M(const KernelCheckOptions& options, std::mt19937_64& rng,
                                CudaSignedSteps& cuda) {
  const at::Device gpu(at::kCUDA, 0);
  std::vector<std::vector<int64_t>> shapes = {{50304, 768}, {1024, 768}};
  for (int layer = 0; layer < 12; ++layer) {
    for (std::vector<int64_t> s : std::vector<std::vector<int64_t>>{{768},
                                                                    {768},
                                                                    {2304, 768},
                                                                    {2304},
                                                                    {768, 768},
                                                                    {768},
                                                                    {768},
                                                                    {768},
                                                                    {3072, 768},
                                                                    {3072},
                                                                    {768, 3072},
                                                                    {768}}) {
      shapes.push_back(s);
    }
  }
  SignedStepCase c;
  int64_t elements = 0;
  for (const auto& shape : shapes) {
    DEMOD_ASSIGN_OR_RETURN(ChunkLayout layout, MakeChunkLayout(shape, 64, 32));
    c.aggregates.push_back(RandomMergedAggregate(layout, 4, AggregateValues::kBFloat16, rng));
    c.params.push_back(at::randn(layout.matrix_shape) * 0.02);
    elements += layout.num_elements();
    c.layouts.push_back(std::move(layout));
  }
  std::vector<at::Tensor> on_cpu, on_gpu;
  for (const at::Tensor& p : c.params) {
    on_cpu.push_back(p.clone());
    on_gpu.push_back(p.to(gpu));
  }
  std::vector<double> cpu_s, gpu_s;
  for (int run = 0; run < options.timing_runs; ++run) {
    auto start = std::chrono::steady_clock::now();
    cpu::ApplySparseSignedSteps(CpuSteps(c, on_cpu), true, 0.9999f, -1e-4f);
    cpu_s.push_back(Seconds(start));
    start = std::chrono::steady_clock::now();
    DEMOD_RETURN_IF_ERROR(cuda.Apply(CudaSteps(c, on_gpu), true, 0.9999f, -1e-4f));
    gpu_s.push_back(Seconds(start));  // Apply returns when the device is done
  }
  int64_t differ = 0;
  for (size_t t = 0; t < on_cpu.size(); ++t) differ += BitsDiffer(on_cpu[t], on_gpu[t]);
  std::printf(
      "125M-parameter GPT (%lld elements, 4 contributors, bf16 values), median of %d: "
      "sparse signed step CPU (%d threads) %.1f ms, CUDA %.2f ms (%.1fx); after %d steps "
      "%lld elements differ\n",
      static_cast<long long>(elements), options.timing_runs, at::get_num_threads(),
      1e3 * Median(cpu_s), 1e3 * Median(gpu_s), Median(cpu_s) / Median(gpu_s), options.timing_runs,
      static_cast<long long>(differ));

  std::vector<double> adam_cpu, adam_gpu;
  const ChunkLayout& big = c.layouts[0];  // the embedding, 38.6M elements
  const at::Tensor g = at::randn({big.num_elements()}) * 1e-2;
  std::vector<float> gradient(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
  at::Tensor p = c.params[0].clone(), m = at::zeros_like(p), v = at::zeros_like(p);
  at::Tensor p_gpu = p.to(gpu), m_gpu = m.to(gpu), v_gpu = v.to(gpu);
  for (int run = 0; run < options.timing_runs; ++run) {
    const rounded::AdamWScalars s = AdamWScalarsFor(1e-3, 0.9, 0.95, 1e-8, 0.1, run + 1);
    auto start = std::chrono::steady_clock::now();
    cpu::ApplyAdamW(gradient.data(), big, s, p.data_ptr<float>(), m.data_ptr<float>(),
                    v.data_ptr<float>());
    adam_cpu.push_back(Seconds(start));
    start = std::chrono::steady_clock::now();
    DEMOD_RETURN_IF_ERROR(ApplyAdamWOnCuda(gradient, big, s, p_gpu, m_gpu, v_gpu));
    adam_gpu.push_back(Seconds(start));  // ApplyAdamWOnCuda returns when the device is done
  }
  const int64_t adam_differ = BitsDiffer(p, p_gpu) + BitsDiffer(m, m_gpu) + BitsDiffer(v, v_gpu);
  std::printf(
      "dense AdamW on the %s embedding, median of %d: CPU %.1f ms, CUDA %.2f ms with the "
      "gradient's copy to the device (%.1fx); %lld elements of p, m, v differ\n",
      ShapeToString(big.matrix_shape).c_str(), options.timing_runs, 1e3 * Median(adam_cpu),
      1e3 * Median(adam_gpu), Median(adam_cpu) / Median(adam_gpu),
      static_cast<long long>(adam_differ));
  return differ == 0 && adam_differ == 0;
}

#endif  // DEMOD_WITH_CUDA

}  // namespace

AggregateTensor RandomMergedAggregate(const ChunkLayout& layout, int contributors,
                                      AggregateValues values, std::mt19937_64& rng) {
  AggregateTensor agg;
  agg.chunk_offsets.push_back(0);
  std::uniform_int_distribution<uint32_t> position(0, layout.chunk_size() - 1);
  std::normal_distribution<float> normal(0.0f, 1e-3f);
  std::uniform_int_distribution<int> votes(-contributors, contributors);
  for (int64_t c = 0; c < layout.num_chunks(); ++c) {
    std::vector<uint32_t> chosen;
    for (int w = 0; w < contributors; ++w) {
      for (int64_t k = 0; k < layout.topk; ++k) chosen.push_back(position(rng));
    }
    std::sort(chosen.begin(), chosen.end());
    chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
    for (uint32_t index : chosen) {
      float v = normal(rng);
      if (values == AggregateValues::kBFloat16) v = static_cast<float>(c10::BFloat16(v));
      if (values == AggregateValues::kSignMean) {
        v = static_cast<float>(votes(rng)) / static_cast<float>(contributors);
      }
      agg.indices.push_back(index);
      agg.values.push_back(v);
    }
    agg.chunk_offsets.push_back(agg.indices.size());
  }
  return agg;
}

absl::StatusOr<bool> CheckCudaKernels(const KernelCheckOptions& options) {
#if defined(DEMOD_WITH_CUDA)
  if (!at::hasCUDA()) return absl::FailedPreconditionError("no CUDA device");
  std::printf("\n== CUDA kernels against the CPU routines, bit for bit ==\n");
  std::mt19937_64 rng(options.seed);
  CudaSignedSteps cuda;
  DEMOD_ASSIGN_OR_RETURN(const bool steps_equal, CheckSignedSteps(options, rng, cuda));
  DEMOD_ASSIGN_OR_RETURN(const bool adamw_equal, CheckAdamW(options, rng));
  bool timed_equal = true;
  if (options.timing_runs > 0) {
    DEMOD_ASSIGN_OR_RETURN(timed_equal, TimeOn125M(options, rng, cuda));
  }
  return steps_equal && adamw_equal && timed_equal;
#else
  (void)options;
  return absl::FailedPreconditionError(
      "not a CUDA build: configure with nvcc and a CUDA LibTorch (DEMOD_WITH_CUDA)");
#endif
}

}  // namespace demod
