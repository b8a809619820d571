// DeMo step vs torch AdamW step on the parameter shapes of a small GPT (d_model 256, 6 layers,
// vocabulary 256, context 256: 4.94M parameters), and the throughput of the wire codec and the
// aggregation. Run with 2 threads (OMP_NUM_THREADS / --threads is not parsed: see main).
//
//   build/bin/demod-bench-optimizer --benchmark_counters_tabular=true
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/benchmark_gpt.h"
#include "common/aggregation.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "worker/demo_optimizer.h"
#include "worker/in_process_exchange.h"

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

// Payloads of W workers with random selections, the shape of a GPT step.
struct SyntheticStep {
  LayoutTable table;
  std::vector<StepPayload> payloads;
  std::vector<std::string> encoded;
};

SyntheticStep MakeSyntheticStep(int workers, ValueEncoding encoding) {
  SyntheticStep s;
  s.table = *MakeLayoutTable(BenchmarkGptShapes(), 64, 32);
  std::mt19937 rng(7);
  for (int w = 0; w < workers; ++w) {
    StepPayload p;
    p.step = 1;
    p.encoding = encoding;
    for (const NamedLayout& t : s.table) {
      SparseTensor st;
      std::vector<uint32_t> all(t.layout.chunk_size());
      std::iota(all.begin(), all.end(), 0);
      std::normal_distribution<float> normal;
      for (int64_t c = 0; c < t.layout.num_chunks(); ++c) {
        std::shuffle(all.begin(), all.end(), rng);
        std::vector<uint32_t> pick(all.begin(), all.begin() + t.layout.topk);
        std::sort(pick.begin(), pick.end());
        for (uint32_t i : pick) {
          st.indices.push_back(i);
          st.values.push_back(normal(rng));
        }
      }
      p.tensors.push_back(std::move(st));
    }
    s.encoded.push_back(*EncodeStepPayload(p, s.table));
    s.payloads.push_back(std::move(p));
  }
  return s;
}

void BM_EncodePayload(benchmark::State& state) {
  SyntheticStep s = MakeSyntheticStep(1, static_cast<ValueEncoding>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(EncodeStepPayload(s.payloads[0], s.table));
  state.SetBytesProcessed(state.iterations() * s.encoded[0].size());
}
BENCHMARK(BM_EncodePayload)->Arg(0)->Arg(1)->Arg(3)->Unit(benchmark::kMicrosecond);

void BM_DecodePayload(benchmark::State& state) {
  SyntheticStep s = MakeSyntheticStep(1, static_cast<ValueEncoding>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(DecodeStepPayload(s.encoded[0], s.table));
  state.SetBytesProcessed(state.iterations() * s.encoded[0].size());
}
BENCHMARK(BM_DecodePayload)->Arg(0)->Arg(1)->Arg(3)->Unit(benchmark::kMicrosecond);

void BM_Aggregate(benchmark::State& state) {
  const int workers = static_cast<int>(state.range(0));
  SyntheticStep s = MakeSyntheticStep(workers, ValueEncoding::kBFloat16);
  std::vector<Contribution> contributions;
  for (int w = 0; w < workers; ++w)
    contributions.push_back({static_cast<uint32_t>(w), &s.payloads[w]});
  int64_t in_bytes = 0;
  for (const std::string& e : s.encoded) in_bytes += e.size();
  for (auto _ : state) benchmark::DoNotOptimize(AggregateStep(contributions, s.table));
  state.SetBytesProcessed(state.iterations() * in_bytes);
  StepAggregate agg = *AggregateStep(contributions, s.table);
  state.counters["down_bytes"] = static_cast<double>(EncodeStepAggregate(agg, s.table)->size());
}
BENCHMARK(BM_Aggregate)->Arg(2)->Arg(8)->Arg(32)->Unit(benchmark::kMicrosecond);

void BM_DecodeAggregate(benchmark::State& state) {
  SyntheticStep s = MakeSyntheticStep(static_cast<int>(state.range(0)), ValueEncoding::kBFloat16);
  std::vector<Contribution> contributions;
  for (size_t w = 0; w < s.payloads.size(); ++w) {
    contributions.push_back({static_cast<uint32_t>(w), &s.payloads[w]});
  }
  std::string bytes = *EncodeStepAggregate(*AggregateStep(contributions, s.table), s.table);
  for (auto _ : state) benchmark::DoNotOptimize(DecodeStepAggregate(bytes, s.table));
  state.SetBytesProcessed(state.iterations() * bytes.size());
}
BENCHMARK(BM_DecodeAggregate)->Arg(8)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  // Both optimizers get the same 2 intra-op threads (LibTorch 1.13 defaults to half the cores).
  const char* threads = std::getenv("DEMOD_BENCH_THREADS");
  at::set_num_threads(threads != nullptr ? std::atoi(threads) : 2);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
