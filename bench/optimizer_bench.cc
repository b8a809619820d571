// DeMo step vs torch AdamW step on the parameter shapes of a small GPT (d_model 256, 6 layers,
// vocabulary 256, context 256: 4.94M parameters). The wire codec and the aggregation alone:
// demod-bench-codec. Run with 2 threads (OMP_NUM_THREADS / --threads is not parsed: see main).
//
//   build/bin/demod-bench-optimizer --benchmark_counters_tabular=true
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/optim/adamw.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "bench/benchmark_gpt.h"
#include "common/layout_table.h"
#include "common/program.h"
#include "worker/optimizer/demo_optimizer.h"
#include "worker/optimizer/in_process_exchange.h"

namespace demod {
namespace {

std::vector<NamedTensor> GptParams() {
  at::manual_seed(0);
  std::vector<NamedTensor> params;
  for (const TensorShape& t : BenchmarkGptShapes()) {
    at::Tensor p = at::randn(t.shape).mul_(0.02);
    p.mutable_grad() = at::randn(t.shape);
    params.emplace_back(t.name, p);
  }
  return params;
}

int64_t NumElements(const std::vector<NamedTensor>& params) {
  int64_t n = 0;
  for (const auto& [name, p] : params) n += p.numel();
  return n;
}

void BM_AdamWStep(benchmark::State& state) {
  std::vector<NamedTensor> named = GptParams();
  std::vector<at::Tensor> params;
  for (auto& [name, p] : named) params.push_back(p);
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(4e-4).weight_decay(0.1));
  for (auto _ : state) adamw.step();
  state.counters["params"] = static_cast<double>(NumElements(named));
}
BENCHMARK(BM_AdamWStep)->Unit(benchmark::kMillisecond)->UseRealTime();

// One worker through the in-process exchange: selection, payload encode, decode + validation,
// aggregation, aggregate encode/decode, inverse DCT and the signed update.
void BM_DemoStep(benchmark::State& state) {
  const auto encoding = static_cast<ValueEncoding>(state.range(0));
  std::vector<NamedTensor> named = GptParams();
  InProcessHub hub(1);
  InProcessExchange exchange(&hub, 0);
  auto opt = DemoOptimizer::Create(named, DemoOptions(4e-4).value_encoding(encoding), &exchange);
  if (!opt.ok()) {
    state.SkipWithError(std::string(opt.status().message()).c_str());
    return;
  }
  for (auto _ : state) {
    absl::Status s = (*opt)->Step();
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  const StepTraffic& t = (*opt)->last_traffic();
  state.counters["up_bytes"] = static_cast<double>(t.bytes_sent);
  state.counters["fp32_over_up"] = static_cast<double>(t.dense_fp32_bytes) / t.bytes_sent;
  state.SetLabel(std::string(ValueEncodingName(encoding)));
}
BENCHMARK(BM_DemoStep)
    ->Arg(static_cast<int>(ValueEncoding::kFloat32))
    ->Arg(static_cast<int>(ValueEncoding::kBFloat16))
    ->Arg(static_cast<int>(ValueEncoding::kSign))
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  // Both optimizers get the same 2 intra-op threads (LibTorch 1.13 defaults to half the cores).
  const char* threads = std::getenv("DEMOD_BENCH_THREADS");
  at::set_num_threads(threads != nullptr ? std::atoi(threads) : 2);
  // The allocator policy of demod-worker, for both optimizers: without it glibc maps and unmaps
  // every large temporary, and each step pays page faults for them.
  demod::KeepLargeBlocksInHeap();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
