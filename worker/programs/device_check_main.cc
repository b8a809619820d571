// demod-device-check [--steps N] [--require-cuda] [GOLDEN.json...]: checks the DeMo optimizer
// on a CUDA device, in two parts.
//
//  1. Golden runs: each file is replayed with every worker on the CPU, every worker on CUDA,
//     and worker 0 on the CPU beside the others on CUDA, against the tolerances of
//     ../shared/golden/README.md.
//  2. Mixed devices: two workers train the same small model (embedding, tanh MLP, softmax) on
//     different data through an InProcessHub (the real codec and aggregation), worker 0 on the
//     CPU, worker 1 on CUDA. DeMo's promise is that both hold the same parameters after every
//     step. Every step reports how many elements differ and why: the decoded aggregate's sign
//     differs between the devices (values near zero), or the update p * keep + step * sign is
//     rounded differently from the same inputs, or the element already differed.
//
//  3. Kernels (a CUDA build only, DEMOD_WITH_CUDA): the CUDA kernels of the sparse signed step
//     and the dense AdamW update against the CPU routines, bit for bit, over --kernel-cases
//     random layouts each, and their speed on a 125M-parameter GPT's tensors
//     (worker/programs/kernel_check.h).
//
// Without CUDA both workers of part 2 run on the CPU (and part 1 on the CPU only, part 3 not at
// all), so the program runs anywhere; --require-cuda makes a missing CUDA device or a build
// without the CUDA kernels an error.
// Exit status: 0 all passed, 1 a golden run out of tolerance or parameters that differ between
// the workers, 2 bad arguments, an unreadable file or an optimizer error.
#include <ATen/ATen.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/demo_optimizer.h"
#include "worker/optimizer/in_process_exchange.h"
#include "worker/programs/kernel_check.h"
#include "worker/replay/golden_run.h"
#include "worker/replay/replay.h"

namespace demod {
namespace {

// Forwards to an InProcessExchange and keeps every step's aggregate.
class RecordingExchange : public Exchange {
 public:
  RecordingExchange(InProcessHub* hub, uint32_t worker_id) : inner_(hub, worker_id) {}

  absl::Status Register(const LayoutTable& table) override { return inner_.Register(table); }

  absl::StatusOr<ExchangeResult> ExchangeStep(int64_t step, std::string payload) override {
    absl::StatusOr<ExchangeResult> result = inner_.ExchangeStep(step, std::move(payload));
    if (result.ok()) aggregates.push_back(result->aggregate);
    return result;
  }

  std::vector<StepAggregate> aggregates;

 private:
  InProcessExchange inner_;
};

constexpr int64_t kVocab = 512;
constexpr int64_t kDim = 128;
constexpr int64_t kHidden = 256;
constexpr int64_t kTokens = 256;

at::Tensor NormalTensor(std::vector<int64_t> shape, float stddev, uint64_t seed,
                        c10::Device device) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> values(n);
  for (float& v : values) v = dist(gen);
  at::Tensor t = at::tensor(at::ArrayRef<float>(values), at::kFloat).reshape(shape).to(device);
  t.set_requires_grad(true);
  return t;
}

// The same initial parameters on every device.
std::vector<NamedTensor> MakeModel(c10::Device device) {
  return {
      {"emb", NormalTensor({kVocab, kDim}, 0.1f, 1, device)},
      {"w1", NormalTensor({kDim, kHidden}, 0.1f, 2, device)},
      {"b1", NormalTensor({kHidden}, 0.01f, 3, device)},
      {"w2", NormalTensor({kHidden, kVocab}, 0.05f, 4, device)},
      {"b2", NormalTensor({kVocab}, 0.01f, 5, device)},
  };
}

// Worker `worker`'s batch at step `step`: random tokens, each to predict a fixed function of it.
std::pair<at::Tensor, at::Tensor> Batch(uint32_t worker, int step, c10::Device device) {
  std::mt19937_64 gen(1000003ull * (worker + 1) + step);
  std::uniform_int_distribution<int64_t> dist(0, kVocab - 1);
  std::vector<int64_t> tokens(kTokens), targets(kTokens);
  for (int64_t j = 0; j < kTokens; ++j) {
    tokens[j] = dist(gen);
    targets[j] = (tokens[j] * 7 + 3) % kVocab;
  }
  return {at::tensor(at::ArrayRef<int64_t>(tokens), at::kLong).to(device),
          at::tensor(at::ArrayRef<int64_t>(targets), at::kLong).to(device)};
}

at::Tensor Loss(const std::vector<NamedTensor>& m, const at::Tensor& tokens,
                const at::Tensor& targets) {
  at::Tensor h = at::embedding(m[0].second, tokens);
  at::Tensor a = at::tanh(at::matmul(h, m[1].second) + m[2].second);
  at::Tensor logits = at::matmul(a, m[3].second) + m[4].second;
  return at::nll_loss(at::log_softmax(logits, 1), targets);
}

struct WorkerTrace {
  c10::Device device = c10::kCPU;
  absl::Status status;
  LayoutTable table;
  std::vector<std::vector<at::Tensor>> params;  // [step][param] on the CPU; [0] initial
  std::vector<StepAggregate> aggregates;        // [step]
  std::vector<float> loss;
};

std::vector<at::Tensor> Snapshot(const std::vector<NamedTensor>& params) {
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : params) out.push_back(p.detach().to(at::kCPU).clone().contiguous());
  return out;
}

void RunTrainingWorker(uint32_t worker, int steps, const DemoOptions& options, InProcessHub* hub,
                       WorkerTrace* trace) {
  std::vector<NamedTensor> params = MakeModel(trace->device);
  RecordingExchange exchange(hub, worker);
  absl::StatusOr<std::unique_ptr<DemoOptimizer>> optimizer =
      DemoOptimizer::Create(params, options, &exchange);
  if (!optimizer.ok()) {
    trace->status = optimizer.status();
    return;
  }
  trace->table = (*optimizer)->layout_table();
  trace->params.push_back(Snapshot(params));
  for (int t = 0; t < steps; ++t) {
    auto [tokens, targets] = Batch(worker, t, trace->device);
    at::Tensor loss = Loss(params, tokens, targets);
    loss.backward();
    trace->loss.push_back(loss.item<float>());
    if (absl::Status s = (*optimizer)->Step(); !s.ok()) {
      trace->status = s;
      return;
    }
    (*optimizer)->ZeroGrad();
    trace->params.push_back(Snapshot(params));
  }
  trace->aggregates = std::move(exchange.aggregates);
}

uint32_t Bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}

float Sign(float v) { return static_cast<float>((v > 0.0f) - (v < 0.0f)); }

bool SameAggregate(const AggregateTensor& a, const AggregateTensor& b) {
  return a.chunk_offsets == b.chunk_offsets && a.indices == b.indices &&
         a.values.size() == b.values.size() &&
         std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float)) == 0;
}

at::Tensor DecodeOn(const AggregateTensor& agg, const ChunkLayout& layout, c10::Device device) {
  return DecodeSparseChunks(agg, layout, at::TensorOptions().dtype(at::kFloat).device(device))
      .to(at::kCPU)
      .contiguous()
      .view({-1});
}

struct StepStats {
  int64_t differ = 0;              // elements whose bits differ between the workers after the step
  int64_t carried = 0;             // of those, elements that already differed before it
  int64_t new_sign = 0;            // new ones where sign(decoded aggregate) differs
  int64_t new_rounding = 0;        // new ones with the same inputs and the same sign
  double max_param_diff = 0;       // max |p_a - p_b|
  int64_t sign_mismatch = 0;       // elements where sign(X_a) != sign(X_b) (X: decoded aggregate)
  int64_t sign_opposite = 0;       //   of those, +1 against -1
  double max_x_at_mismatch = 0;    //   max(|X_a|, |X_b|) over them
  double max_x = 0;                // max |X_a| over all elements (the scale)
  double max_x_diff = 0;           // max |X_a - X_b|
  int64_t emulated_diff = 0;       // ATen mul_/add_ on device b from worker a's inputs != worker a
  int64_t fma_would_differ = 0;    // fma(p, keep, step * s) != round(round(p * keep) + step * s)
  int64_t a_not_two_rounding = 0;  // worker a's result != the two-rounding formula
  int64_t b_not_two_rounding = 0;  // worker b's result != the two-rounding formula
};

// Part 2 for one setting. Returns false when the parameters differ at some step (or on error).
bool MixedDeviceCheck(const std::string& label, const DemoOptions& options, int steps,
                      c10::Device device_b, bool* error) {
  std::printf("\n== mixed devices: %s, worker 0 on cpu, worker 1 on %s, %d steps ==\n",
              label.c_str(), device_b.str().c_str(), steps);
  InProcessHub hub(2, absl::Seconds(120));
  WorkerTrace traces[2];
  traces[0].device = c10::Device(c10::kCPU);
  traces[1].device = device_b;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] { RunTrainingWorker(w, steps, options, &hub, &traces[w]); });
  }
  for (std::thread& t : threads) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int w = 0; w < 2; ++w) {
    if (!traces[w].status.ok()) {
      std::printf("worker %d: %s\n", w, traces[w].status.ToString().c_str());
      *error = true;
      return false;
    }
  }
  std::printf("trained in %.2f s; loss worker 0: %.4f -> %.4f, worker 1: %.4f -> %.4f\n", seconds,
              traces[0].loss.front(), traces[0].loss.back(), traces[1].loss.front(),
              traces[1].loss.back());

  const WorkerTrace& a = traces[0];
  const WorkerTrace& b = traces[1];
  const float keep = static_cast<float>(1.0 - options.lr() * options.weight_decay());
  const float step_size = static_cast<float>(-options.lr());
  const bool decay = options.weight_decay() != 0.0;
  std::printf("lr=%g weight_decay=%g keep=%.9g (float) encoding=%d\n", options.lr(),
              options.weight_decay(), keep, static_cast<int>(options.value_encoding()));
  std::printf(
      "step | differ (carried, new: sign, rounding) max|dp| | X sign mismatch (opposite) "
      "max|X| there / max|X| max|Xa-Xb| | emulated-update diffs, fma-would-differ, "
      "a!=2round, b!=2round\n");
  int64_t total_new_sign = 0, total_new_rounding = 0, total_emulated = 0, steps_with_diff = 0;
  int examples = 0;
  bool same_aggregates = true;
  for (int t = 0; t < steps; ++t) {
    StepStats s;
    for (size_t i = 0; i < a.table.size(); ++i) {
      const AggregateTensor& agg = a.aggregates[t].tensors[i];
      if (!SameAggregate(agg, b.aggregates[t].tensors[i])) same_aggregates = false;
      const ChunkLayout& layout = a.table[i].layout;
      const at::Tensor xa_t = DecodeOn(agg, layout, a.device);
      const at::Tensor xb_t = DecodeOn(agg, layout, b.device);
      const at::Tensor pa0_t = a.params[t][i].view({-1});
      const at::Tensor pb0_t = b.params[t][i].view({-1});
      const at::Tensor pa1_t = a.params[t + 1][i].view({-1});
      const at::Tensor pb1_t = b.params[t + 1][i].view({-1});
      // Worker b's ATen update from worker a's inputs: isolates rounding from the decode.
      at::Tensor emulated = pa0_t.to(b.device).clone();
      if (decay) emulated.mul_(1.0 - options.lr() * options.weight_decay());
      emulated.add_(at::sign(xa_t).to(b.device), -options.lr());
      emulated = emulated.to(at::kCPU).contiguous();

      const float* xa = xa_t.data_ptr<float>();
      const float* xb = xb_t.data_ptr<float>();
      const float* pa0 = pa0_t.data_ptr<float>();
      const float* pb0 = pb0_t.data_ptr<float>();
      const float* pa1 = pa1_t.data_ptr<float>();
      const float* pb1 = pb1_t.data_ptr<float>();
      const float* em = emulated.data_ptr<float>();
      for (int64_t j = 0; j < pa1_t.numel(); ++j) {
        const float sa = Sign(xa[j]), sb = Sign(xb[j]);
        s.max_x = std::max<double>(s.max_x, std::fabs(xa[j]));
        s.max_x_diff = std::max<double>(s.max_x_diff, std::fabs(xa[j] - xb[j]));
        if (sa != sb) {
          ++s.sign_mismatch;
          if (sa * sb < 0) ++s.sign_opposite;
          s.max_x_at_mismatch =
              std::max<double>(s.max_x_at_mismatch, std::max(std::fabs(xa[j]), std::fabs(xb[j])));
          if (examples < 8) {
            ++examples;
            std::printf("  example: step %d %s[%lld]: X cpu=%.9g X %s=%.9g\n", t + 1,
                        a.table[i].name.c_str(), static_cast<long long>(j), xa[j],
                        b.device.str().c_str(), xb[j]);
          }
        }
        if (Bits(em[j]) != Bits(pa1[j])) ++s.emulated_diff;
        const float kept_a = decay ? pa0[j] * keep : pa0[j];
        const float two_a = kept_a + step_size * sa;
        const float fma_a = decay ? std::fma(pa0[j], keep, step_size * sa) : two_a;
        if (Bits(fma_a) != Bits(two_a)) ++s.fma_would_differ;
        if (Bits(two_a) != Bits(pa1[j])) ++s.a_not_two_rounding;
        const float kept_b = decay ? pb0[j] * keep : pb0[j];
        const float two_b = kept_b + step_size * sb;
        if (Bits(two_b) != Bits(pb1[j])) ++s.b_not_two_rounding;
        if (Bits(pa1[j]) == Bits(pb1[j])) continue;
        ++s.differ;
        s.max_param_diff = std::max<double>(s.max_param_diff, std::fabs(pa1[j] - pb1[j]));
        if (Bits(pa0[j]) != Bits(pb0[j])) {
          ++s.carried;
        } else if (sa != sb) {
          ++s.new_sign;
        } else {
          ++s.new_rounding;
        }
      }
    }
    total_new_sign += s.new_sign;
    total_new_rounding += s.new_rounding;
    total_emulated += s.emulated_diff;
    if (s.differ > 0) ++steps_with_diff;
    std::printf(
        "%4d | %6lld (%6lld, %5lld, %5lld) %.3g | %5lld (%5lld) %.3g / %.3g %.3g | %lld, %lld, "
        "%lld, %lld\n",
        t + 1, static_cast<long long>(s.differ), static_cast<long long>(s.carried),
        static_cast<long long>(s.new_sign), static_cast<long long>(s.new_rounding),
        s.max_param_diff, static_cast<long long>(s.sign_mismatch),
        static_cast<long long>(s.sign_opposite), s.max_x_at_mismatch, s.max_x, s.max_x_diff,
        static_cast<long long>(s.emulated_diff), static_cast<long long>(s.fma_would_differ),
        static_cast<long long>(s.a_not_two_rounding), static_cast<long long>(s.b_not_two_rounding));
  }
  int64_t elements = 0, final_differ = 0;
  for (size_t i = 0; i < a.table.size(); ++i) {
    const at::Tensor pa = a.params[steps][i].view({-1});
    const at::Tensor pb = b.params[steps][i].view({-1});
    elements += pa.numel();
    for (int64_t j = 0; j < pa.numel(); ++j) {
      final_differ += Bits(pa.data_ptr<float>()[j]) != Bits(pb.data_ptr<float>()[j]);
    }
  }
  const bool identical = steps_with_diff == 0;
  std::printf(
      "%s: %s; aggregates identical on both workers: %s; steps with differing parameters: %lld/%d; "
      "differing after the last step: %lld/%lld; new differences from sign: %lld, from rounding: "
      "%lld; emulated-update diffs: %lld\n",
      label.c_str(), identical ? "IDENTICAL" : "DIFFER", same_aggregates ? "yes" : "NO",
      static_cast<long long>(steps_with_diff), steps, static_cast<long long>(final_differ),
      static_cast<long long>(elements), static_cast<long long>(total_new_sign),
      static_cast<long long>(total_new_rounding), static_cast<long long>(total_emulated));
  return identical && same_aggregates;
}

int Main(int argc, char** argv) {
  int steps = 50;
  bool require_cuda = false;
  KernelCheckOptions kernel_options;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--steps" && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else if (arg == "--require-cuda") {
      require_cuda = true;
    } else if (arg == "--kernel-cases" && i + 1 < argc) {
      kernel_options.cases = std::atoi(argv[++i]);
    } else if (arg.rfind("--", 0) == 0) {
      std::fprintf(stderr,
                   "usage: demod-device-check [--steps N] [--kernel-cases N] [--require-cuda] "
                   "[GOLDEN.json...]\n");
      return 2;
    } else {
      files.push_back(arg);
    }
  }
  if (steps < 1 || kernel_options.cases < 1) {
    std::fprintf(stderr, "demod-device-check: --steps and --kernel-cases must be >= 1\n");
    return 2;
  }
  const bool cuda = at::hasCUDA();
  std::printf("LibTorch %s; CUDA %s", TORCH_VERSION,
              cuda ? "available" : "unavailable (CUDA parts run on the CPU)");
  std::printf("\n");
  if (require_cuda && !cuda) {
    std::fprintf(stderr, "demod-device-check: --require-cuda, but CUDA is unavailable\n");
    return 2;
  }
  const c10::Device cpu(c10::kCPU);
  const c10::Device gpu = cuda ? c10::Device(c10::kCUDA, 0) : cpu;
  bool failed = false;
  bool error = false;

  // Part 1.
  for (const std::string& file : files) {
    absl::StatusOr<GoldenRun> run = ReadGoldenRun(file);
    if (!run.ok()) {
      std::fprintf(stderr, "demod-device-check: %s\n", std::string(run.status().message()).c_str());
      return 2;
    }
    std::vector<std::pair<std::string, std::vector<c10::Device>>> setups = {{"cpu", {cpu}}};
    if (cuda) {
      setups.push_back({"cuda", {gpu}});
      setups.push_back({"cpu+cuda", {cpu, gpu}});
    }
    for (const auto& [name, devices] : setups) {
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<ReplayReport> report = Replay(*run, devices);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!report.ok()) {
        std::printf("golden %s [%s]: ERROR %s\n", file.c_str(), name.c_str(),
                    report.status().ToString().c_str());
        error = true;
        continue;
      }
      std::printf("golden %s [%s]: %s (%.2f s)\n", file.c_str(), name.c_str(),
                  report->Summary().c_str(), seconds);
      if (!report->WithinTolerance()) failed = true;
    }
  }

  // Part 2.
  const std::vector<std::pair<std::string, DemoOptions>> settings = {
      {"f32 wire, no weight decay", DemoOptions(1e-3)},
      {"bf16 wire, weight decay 0.1",
       DemoOptions(1e-3).weight_decay(0.1).value_encoding(ValueEncoding::kBFloat16)},
      {"sign wire, weight decay 0.01",
       DemoOptions(3e-4).weight_decay(0.01).value_encoding(ValueEncoding::kSign)},
  };
  for (const auto& [label, options] : settings) {
    if (!MixedDeviceCheck(label, options, steps, gpu, &error)) failed = true;
  }

  // Part 3.
  absl::StatusOr<bool> kernels_equal = CheckCudaKernels(kernel_options);
  if (kernels_equal.ok()) {
    if (!*kernels_equal) failed = true;
  } else if (require_cuda || !absl::IsFailedPrecondition(kernels_equal.status())) {
    std::printf("\nCUDA kernels: ERROR %s\n", kernels_equal.status().ToString().c_str());
    error = true;
  } else {
    std::printf("\nCUDA kernels: skipped (%s)\n",
                std::string(kernels_equal.status().message()).c_str());
  }
  std::printf("\n%s\n", error ? "ERROR" : failed ? "FAIL" : "PASS");
  return error ? 2 : failed ? 1 : 0;
}

}  // namespace
}  // namespace demod

int main(int argc, char** argv) { return demod::Main(argc, argv); }
