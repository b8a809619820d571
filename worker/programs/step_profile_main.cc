// demod-step-profile: where a worker's training step goes, phase by phase, for the byte-level
// GPT at a chosen size on a chosen device (issue 17, docs/benchmarks.md "A GPU worker's step"):
//   forward+backward   the model's loss and its gradients
//   encode             the optimizer's work before the exchange (DeMo: the DCT of the
//                      gradients, momentum, top-k, the payload; AdamW: the gradients to the wire)
//   exchange           the payload through an in-process hub (one worker: the aggregate is its
//                      own selection; no network)
//   decode+apply       the aggregate back into the parameters (DeMo: the sparse decode and the
//                      signed step; AdamW: the update)
// Each phase ends with the device idle, so phases do not overlap. Prints the median of --steps
// steps after --warmup, and with --csv appends one line per run.
//   demod-step-profile --device cuda --d_model 768 --layers 18 --heads 12 --context 1024
//     --batch 8 --optimizer demo --encoding bf16
// Exit status: 0 done, 2 bad flags or a failed step.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/value_encoding.h"
#include "worker/models/gpt_model.h"
#include "worker/optimizer/demo_optimizer.h"
#include "worker/optimizer/dense_adamw.h"
#include "worker/optimizer/in_process_exchange.h"

ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(int64_t, d_model, 256, "the GPT's width");
ABSL_FLAG(int64_t, layers, 6, "the GPT's blocks");
ABSL_FLAG(int64_t, heads, 8, "attention heads (divide d_model)");
ABSL_FLAG(int64_t, context, 256, "tokens per sample");
ABSL_FLAG(int64_t, batch, 8, "samples per step");
ABSL_FLAG(std::string, optimizer, "demo", "demo or adamw (the dense baseline)");
ABSL_FLAG(std::string, encoding, "bf16", "payload values: f32, bf16 or sign (adamw: f32, bf16)");
ABSL_FLAG(int64_t, chunk, 64, "DeMo's DCT chunk");
ABSL_FLAG(int64_t, topk, 32, "DeMo's coefficients per chunk");
ABSL_FLAG(bool, device_updates, true,
          "CUDA builds: decode and update on the GPU (false: on the CPU, as CPU-only builds)");
ABSL_FLAG(int, steps, 10, "measured steps");
ABSL_FLAG(int, warmup, 3, "steps before measuring");
ABSL_FLAG(std::string, label, "", "a name for this run in the output (default: the settings)");
ABSL_FLAG(std::string, csv, "", "append one line of results to this file");

namespace demod {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Returns once the device has finished everything queued so far: a copy to the host waits for
// the stream's earlier work.
void WaitFor(const at::Device& device) {
  if (!device.is_cpu()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}

// Forwards to an InProcessExchange and notes when the optimizer's exchange starts and ends.
class TimedExchange : public Exchange {
 public:
  TimedExchange(InProcessHub* hub, at::Device device) : inner_(hub, 0), device_(device) {}
  absl::Status Register(const LayoutTable& table) override { return inner_.Register(table); }
  absl::StatusOr<ExchangeResult> ExchangeStep(int64_t step, std::string payload) override {
    WaitFor(device_);
    entered = Clock::now();
    absl::StatusOr<ExchangeResult> result = inner_.ExchangeStep(step, std::move(payload));
    left = Clock::now();
    return result;
  }
  Clock::time_point entered, left;

 private:
  InProcessExchange inner_;
  at::Device device_;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Main() {
  at::Device device(at::kCPU);
  try {
    device = at::Device(absl::GetFlag(FLAGS_device));
  } catch (const std::exception&) {
    std::fprintf(stderr, "demod-step-profile: --device %s is not a device\n",
                 absl::GetFlag(FLAGS_device).c_str());
    return 2;
  }
  GptConfig config;
  config.d_model = absl::GetFlag(FLAGS_d_model);
  config.layers = absl::GetFlag(FLAGS_layers);
  config.heads = absl::GetFlag(FLAGS_heads);
  config.context = absl::GetFlag(FLAGS_context);
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  const std::string optimizer_name = absl::GetFlag(FLAGS_optimizer);
  const int steps = absl::GetFlag(FLAGS_steps), warmup = absl::GetFlag(FLAGS_warmup);
  const absl::StatusOr<ValueEncoding> encoding = ParseValueEncoding(absl::GetFlag(FLAGS_encoding));
  if (batch < 1 || steps < 1 || warmup < 0 || !encoding.ok() ||
      (optimizer_name != "demo" && optimizer_name != "adamw")) {
    std::fprintf(stderr, "demod-step-profile: bad flags (see --help)\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<GptModel>> model = GptModel::Create(config, 1, device);
  if (!model.ok()) {
    std::fprintf(stderr, "demod-step-profile: %s\n", model.status().ToString().c_str());
    return 2;
  }
  std::vector<NamedTensor> params = (*model)->NamedParameters();
  int64_t parameters = 0;
  for (const auto& [name, p] : params) parameters += p.numel();

  InProcessHub hub(1);
  TimedExchange exchange(&hub, device);
  absl::StatusOr<std::unique_ptr<StepOptimizer>> optimizer;
  if (optimizer_name == "demo") {
    optimizer = DemoOptimizer::Create(params,
                                      DemoOptions(1e-4)
                                          .compression_chunk(absl::GetFlag(FLAGS_chunk))
                                          .compression_topk(absl::GetFlag(FLAGS_topk))
                                          .value_encoding(*encoding)
                                          .device_updates(absl::GetFlag(FLAGS_device_updates)),
                                      &exchange);
  } else {
    AdamWOptions options;
    options.encoding = *encoding;
    options.device_updates = absl::GetFlag(FLAGS_device_updates);
    optimizer = DenseAdamW::Create(params, options, &exchange);
  }
  if (!optimizer.ok()) {
    std::fprintf(stderr, "demod-step-profile: %s\n", optimizer.status().ToString().c_str());
    return 2;
  }

  std::vector<double> forward_backward, encode, exchanged, apply, total;
  for (int s = 0; s < warmup + steps; ++s) {
    Batch data;
    const at::Tensor bytes =
        at::randint(0, GptConfig::kVocab, {batch, config.context + 1}, at::kLong).to(device);
    data.inputs = bytes.narrow(1, 0, config.context);
    data.targets = bytes.narrow(1, 1, config.context);
    WaitFor(device);
    const Clock::time_point start = Clock::now();
    absl::StatusOr<at::Tensor> loss = (*model)->Loss(data);
    if (!loss.ok()) {
      std::fprintf(stderr, "demod-step-profile: %s\n", loss.status().ToString().c_str());
      return 2;
    }
    loss->backward();
    WaitFor(device);
    const Clock::time_point backward_done = Clock::now();
    const absl::Status stepped = (*optimizer)->Step();
    WaitFor(device);
    const Clock::time_point done = Clock::now();
    if (!stepped.ok()) {
      std::fprintf(stderr, "demod-step-profile: %s\n", stepped.ToString().c_str());
      return 2;
    }
    (*optimizer)->ZeroGrad();
    if (s < warmup) continue;
    forward_backward.push_back(Ms(start, backward_done));
    encode.push_back(Ms(backward_done, exchange.entered));
    exchanged.push_back(Ms(exchange.entered, exchange.left));
    apply.push_back(Ms(exchange.left, done));
    total.push_back(Ms(start, done));
  }
  const std::string label = absl::GetFlag(FLAGS_label).empty()
                                ? absl::StrCat(optimizer_name, "-", absl::GetFlag(FLAGS_encoding))
                                : absl::GetFlag(FLAGS_label);
  const double fb = Median(forward_backward), enc = Median(encode), ex = Median(exchanged),
               ap = Median(apply), step = Median(total);
  const double added = step - fb;
  std::printf(
      "%s on %s: GPT d_model %lld, %lld layers, context %lld, batch %lld (%.1fM "
      "parameters); median of %d steps, ms:\n"
      "  forward+backward %.1f | encode %.1f | exchange %.1f | decode+apply %.1f | step "
      "%.1f; the optimizer adds %.1f%% of the step\n",
      label.c_str(), device.str().c_str(), static_cast<long long>(config.d_model),
      static_cast<long long>(config.layers), static_cast<long long>(config.context),
      static_cast<long long>(batch), parameters / 1e6, steps, fb, enc, ex, ap, step,
      100 * added / step);
  const std::string csv = absl::GetFlag(FLAGS_csv);
  if (!csv.empty()) {
    std::FILE* f = std::fopen(csv.c_str(), "a");
    if (f == nullptr) {
      std::fprintf(stderr, "demod-step-profile: cannot append to %s\n", csv.c_str());
      return 2;
    }
    std::fprintf(f, "%s,%s,%lld,%lld,%lld,%.3f,%.3f,%.3f,%.3f,%.3f\n", label.c_str(),
                 device.str().c_str(), static_cast<long long>(parameters),
                 static_cast<long long>(batch), static_cast<long long>(config.context), fb, enc, ex,
                 ap, step);
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("where a worker's training step goes, phase by phase");
  absl::ParseCommandLine(argc, argv);
  return demod::Main();
}
