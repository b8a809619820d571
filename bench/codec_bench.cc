// What the coordinator's CPU does each step, without gRPC: decode and validate the workers'
// payloads, aggregate them, encode the aggregate; and what a worker does with the aggregate.
// On the benchmark GPT's table (bench/benchmark_gpt.h: chunk 64, top-k 32) with the selections
// demod-loadgen sends (bench/synthetic_selection.h). No LibTorch.
//
//   build/bin/demod-bench-codec --benchmark_counters_tabular=true
//
// Arguments: workers, and candidates per chunk (-1: 2 x top-k, overlapping selections as real
// workers make; 0: independent random selections, the nearly dense worst case).
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "bench/benchmark_gpt.h"
#include "bench/synthetic_selection.h"
#include "common/aggregation.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "common/program.h"

namespace demod {
namespace {

struct SyntheticStep {
  LayoutTable table;
  std::vector<StepPayload> payloads;
  std::vector<std::string> encoded;
  std::vector<Contribution> contributions;
  int64_t payload_bytes = 0;  // all workers
};

SyntheticStep MakeStep(int workers, int64_t candidates_per_chunk, ValueEncoding encoding) {
  SyntheticStep s;
  s.table = *MakeLayoutTable(BenchmarkGptShapes(), 64, 32);
  std::mt19937_64 random(7);
  const int64_t per_chunk = candidates_per_chunk < 0 ? 2 * 32 : candidates_per_chunk;
  const Candidates candidates = DrawCandidates(s.table, per_chunk, random);
  for (int w = 0; w < workers; ++w) {
    s.payloads.push_back(SelectPayload(s.table, candidates, 1, encoding, random));
    s.encoded.push_back(*EncodeStepPayload(s.payloads.back(), s.table));
    s.payload_bytes += static_cast<int64_t>(s.encoded.back().size());
  }
  for (int w = 0; w < workers; ++w) {
    s.contributions.push_back({static_cast<uint32_t>(w), &s.payloads[w]});
  }
  return s;
}

void Fail(benchmark::State& state, const absl::Status& status) {
  state.SkipWithError(std::string(status.message()).c_str());
}

void BM_EncodePayload(benchmark::State& state) {
  SyntheticStep s = MakeStep(1, -1, static_cast<ValueEncoding>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(EncodeStepPayload(s.payloads[0], s.table));
  state.SetBytesProcessed(state.iterations() * s.payload_bytes);
  state.SetLabel(std::string(ValueEncodingName(s.payloads[0].encoding)));
}
BENCHMARK(BM_EncodePayload)->Arg(0)->Arg(1)->Arg(3)->Unit(benchmark::kMicrosecond);

void BM_DecodePayload(benchmark::State& state) {
  SyntheticStep s = MakeStep(1, -1, static_cast<ValueEncoding>(state.range(0)));
  for (auto _ : state) {
    absl::StatusOr<StepPayload> decoded = DecodeStepPayload(s.encoded[0], s.table);
    if (!decoded.ok()) return Fail(state, decoded.status());
    benchmark::DoNotOptimize(decoded);
  }
  state.SetBytesProcessed(state.iterations() * s.payload_bytes);
  state.SetLabel(std::string(ValueEncodingName(s.payloads[0].encoding)));
}
BENCHMARK(BM_DecodePayload)->Arg(0)->Arg(1)->Arg(3)->Unit(benchmark::kMicrosecond);

void BM_Aggregate(benchmark::State& state) {
  SyntheticStep s =
      MakeStep(static_cast<int>(state.range(0)), state.range(1), ValueEncoding::kBFloat16);
  for (auto _ : state) {
    absl::StatusOr<StepAggregate> aggregate = AggregateStep(s.contributions, s.table);
    if (!aggregate.ok()) return Fail(state, aggregate.status());
    benchmark::DoNotOptimize(aggregate);
  }
  state.SetBytesProcessed(state.iterations() * s.payload_bytes);
}
BENCHMARK(BM_Aggregate)
    ->Args({2, -1})
    ->Args({8, -1})
    ->Args({32, -1})
    ->Args({8, 0})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_EncodeAggregate(benchmark::State& state) {
  SyntheticStep s = MakeStep(static_cast<int>(state.range(0)), -1, ValueEncoding::kBFloat16);
  const StepAggregate aggregate = *AggregateStep(s.contributions, s.table);
  int64_t bytes = 0;
  for (auto _ : state) {
    absl::StatusOr<std::string> encoded = EncodeStepAggregate(aggregate, s.table);
    if (!encoded.ok()) return Fail(state, encoded.status());
    bytes = static_cast<int64_t>(encoded->size());
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_EncodeAggregate)->Arg(8)->Unit(benchmark::kMicrosecond);

void BM_DecodeAggregate(benchmark::State& state) {
  SyntheticStep s = MakeStep(static_cast<int>(state.range(0)), -1, ValueEncoding::kBFloat16);
  const std::string bytes = *EncodeStepAggregate(*AggregateStep(s.contributions, s.table), s.table);
  for (auto _ : state) {
    absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(bytes, s.table);
    if (!decoded.ok()) return Fail(state, decoded.status());
    benchmark::DoNotOptimize(decoded);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_DecodeAggregate)->Arg(8)->Unit(benchmark::kMicrosecond);

// What follows a step's last payload (arguments: workers; 0: AggregateStep then
// EncodeStepAggregate, two passes; 1: AggregateStepEncoded, each thread encoding what it
// aggregated, as the coordinator does; the payloads' encoding).
void BM_AggregateAndEncode(benchmark::State& state) {
  SyntheticStep s =
      MakeStep(static_cast<int>(state.range(0)), -1, static_cast<ValueEncoding>(state.range(2)));
  const bool fused = state.range(1) == 1;
  for (auto _ : state) {
    absl::StatusOr<std::string> encoded;
    if (fused) {
      encoded = AggregateStepEncoded(s.contributions, s.table);
    } else {
      absl::StatusOr<StepAggregate> aggregate = AggregateStep(s.contributions, s.table);
      if (!aggregate.ok()) return Fail(state, aggregate.status());
      encoded = EncodeStepAggregate(*aggregate, s.table);
    }
    if (!encoded.ok()) return Fail(state, encoded.status());
    benchmark::DoNotOptimize(encoded);
  }
  state.SetBytesProcessed(state.iterations() * s.payload_bytes);
  state.SetLabel(std::string(ValueEncodingName(s.payloads[0].encoding)));
}
constexpr int kBf16 = static_cast<int>(ValueEncoding::kBFloat16);
constexpr int kSign = static_cast<int>(ValueEncoding::kSign);
BENCHMARK(BM_AggregateAndEncode)
    ->Args({2, 0, kBf16})
    ->Args({2, 1, kBf16})
    ->Args({8, 0, kBf16})
    ->Args({8, 1, kBf16})
    ->Args({32, 0, kBf16})
    ->Args({32, 1, kBf16})
    ->Args({1, 1, kSign})  // one worker: the optimizer benchmark's in-process exchange
    ->Args({4, 1, kSign})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The coordinator's CPU for one step, as RunCoordinator does it: decode every payload, then
// aggregate and encode the aggregate.
void BM_CoordinatorStep(benchmark::State& state) {
  SyntheticStep s = MakeStep(static_cast<int>(state.range(0)), -1, ValueEncoding::kBFloat16);
  int64_t aggregate_bytes = 0;
  for (auto _ : state) {
    std::vector<StepPayload> decoded;
    decoded.reserve(s.encoded.size());
    for (const std::string& bytes : s.encoded) {
      absl::StatusOr<StepPayload> payload = DecodeStepPayload(bytes, s.table);
      if (!payload.ok()) return Fail(state, payload.status());
      decoded.push_back(*std::move(payload));
    }
    std::vector<Contribution> contributions;
    for (size_t w = 0; w < decoded.size(); ++w) {
      contributions.push_back({static_cast<uint32_t>(w), &decoded[w]});
    }
    absl::StatusOr<std::string> encoded = AggregateStepEncoded(contributions, s.table);
    if (!encoded.ok()) return Fail(state, encoded.status());
    aggregate_bytes = static_cast<int64_t>(encoded->size());
  }
  state.SetBytesProcessed(state.iterations() * s.payload_bytes);
  state.counters["aggregate_bytes"] = static_cast<double>(aggregate_bytes);
}
BENCHMARK(BM_CoordinatorStep)
    ->Arg(2)
    ->Arg(8)
    ->Arg(32)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  // The coordinator's allocator policy (common/program.h), so that large blocks cost here what
  // they cost there.
  demod::KeepLargeBlocksInHeap();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
