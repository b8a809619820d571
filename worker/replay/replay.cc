#include "worker/replay/replay.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/optimizer/demo_optimizer.h"
#include "worker/optimizer/in_process_exchange.h"

namespace demod {
namespace {

constexpr double kMaxMismatchedChunkFraction = 1e-3;
constexpr double kMaxDeltaError = 1e-6;
constexpr double kParamTolerance = 1e-6;
constexpr double kMaxMismatchedParamFraction = 1e-4;

std::vector<double> Flatten(const at::Tensor& t) {
  at::Tensor d = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// What one simulated worker produced at one step.
struct Observed {
  StepPayload payload;
  std::vector<std::vector<double>> params;
  std::vector<std::vector<double>> delta;
};

absl::Status RunWorker(const GoldenRun& run, uint32_t worker, c10::Device device, InProcessHub* hub,
                       std::vector<Observed>* observed) {
  std::vector<NamedTensor> params;
  for (const GoldenParam& p : run.params) {
    at::Tensor t =
        at::tensor(at::ArrayRef<float>(p.init), at::kFloat).reshape(p.shape).clone().to(device);
    params.emplace_back(p.name, t);
  }
  InProcessExchange exchange(hub, worker);
  absl::StatusOr<std::unique_ptr<DemoOptimizer>> optimizer =
      DemoOptimizer::Create(params, run.options, &exchange);
  if (!optimizer.ok()) return optimizer.status();
  for (int t = 0; t < run.steps; ++t) {
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].second.mutable_grad() =
          at::tensor(at::ArrayRef<float>(run.grads[t][worker][i]), at::kFloat)
              .reshape(run.params[i].shape)
              .to(device);
    }
    if (absl::Status s = (*optimizer)->Step(); !s.ok()) return s;
    Observed& o = (*observed)[t];
    o.payload = (*optimizer)->last_payload();
    for (size_t i = 0; i < params.size(); ++i) {
      o.params.push_back(Flatten(params[i].second));
      o.delta.push_back(Flatten((*optimizer)->Momentum(i)));
    }
  }
  return absl::OkStatus();
}

void ComparePayload(const GoldenPayload& want, const SparseTensor& got, int64_t chunk_count,
                    ReplayReport* report) {
  const int64_t k = want.k;
  for (int64_t c = 0; c < chunk_count; ++c) {
    ++report->chunks;
    bool same_set = true;
    for (int64_t j = 0; j < k; ++j) {
      same_set &= static_cast<int64_t>(got.indices[c * k + j]) == want.indices[c * k + j];
    }
    if (!same_set) {
      ++report->chunks_mismatched;
      continue;
    }
    for (int64_t j = 0; j < k; ++j) {
      const double expected = want.values[c * k + j];
      const double err = std::abs(got.values[c * k + j] - expected);
      report->max_value_error = std::max(report->max_value_error, err);
      report->max_value_excess =
          std::max(report->max_value_excess, err - (1e-5 + 1e-4 * std::abs(expected)));
    }
  }
}

absl::Status CheckPayloadShape(const GoldenPayload& want, const SparseTensor& got,
                               const std::string& name, int64_t* chunk_count) {
  int64_t chunks = 1;
  for (int64_t g : want.chunk_grid) chunks *= g;
  const size_t expected = static_cast<size_t>(chunks * want.k);
  if (want.indices.size() != expected || want.values.size() != expected ||
      got.indices.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "': reference payload has ", want.indices.size(), " entries for ", chunks,
        " chunks of k=", want.k, "; demod selected ", got.indices.size()));
  }
  *chunk_count = chunks;
  return absl::OkStatus();
}

}  // namespace

bool ReplayReport::WithinTolerance() const {
  const double mismatched_chunk_fraction =
      chunks == 0 ? 0 : static_cast<double>(chunks_mismatched) / chunks;
  const double mismatched_param_fraction =
      params == 0 ? 0 : static_cast<double>(params_mismatched) / params;
  return mismatched_chunk_fraction <= kMaxMismatchedChunkFraction && max_value_excess <= 0 &&
         max_delta_error <= kMaxDeltaError &&
         mismatched_param_fraction <= kMaxMismatchedParamFraction &&
         max_param_error <= 2 * lr + kParamTolerance;
}

std::string ReplayReport::Summary() const {
  return absl::StrFormat(
      "%s chunks_mismatched=%d/%d max_value_err=%.3g max_delta_err=%.3g "
      "params_mismatched=%d/%d max_param_err=%.3g",
      WithinTolerance() ? "OK" : "FAIL", chunks_mismatched, chunks, max_value_error,
      max_delta_error, params_mismatched, params, max_param_error);
}

absl::StatusOr<ReplayReport> Replay(const GoldenRun& run, const std::vector<c10::Device>& devices) {
  InProcessHub hub(run.workers);
  std::vector<std::vector<Observed>> observed(run.workers, std::vector<Observed>(run.steps));
  std::vector<absl::Status> status(run.workers);
  std::vector<std::thread> threads;
  for (int w = 0; w < run.workers; ++w) {
    const c10::Device device =
        devices.empty() ? c10::Device(c10::kCPU) : devices[w % devices.size()];
    threads.emplace_back(
        [&, w, device] { status[w] = RunWorker(run, w, device, &hub, &observed[w]); });
  }
  for (std::thread& t : threads) t.join();
  for (int w = 0; w < run.workers; ++w) {
    if (!status[w].ok()) {
      return absl::Status(status[w].code(), absl::StrCat("worker ", w, ": ", status[w].message()));
    }
  }

  ReplayReport report;
  report.lr = run.options.lr();
  for (int t = 0; t < run.steps; ++t) {
    const GoldenStep& want = run.expected[t];
    for (int w = 0; w < run.workers; ++w) {
      const Observed& got = observed[w][t];
      for (size_t i = 0; i < run.params.size(); ++i) {
        int64_t chunk_count = 0;
        const std::string& name = run.params[i].name;
        if (absl::Status s =
                CheckPayloadShape(want.payload[w][i], got.payload.tensors[i], name, &chunk_count);
            !s.ok()) {
          return s;
        }
        ComparePayload(want.payload[w][i], got.payload.tensors[i], chunk_count, &report);
        const std::vector<double>& delta = want.delta_after[w][i];
        if (delta.size() != got.delta[i].size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor '", name, "': delta_after has the wrong size"));
        }
        for (size_t e = 0; e < delta.size(); ++e) {
          report.max_delta_error =
              std::max(report.max_delta_error, std::abs(got.delta[i][e] - delta[e]));
        }
        // Parameters are compared on every worker: they must all match the reference.
        const std::vector<double>& params = want.params_after[i];
        if (params.size() != got.params[i].size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor '", name, "': params_after has the wrong size"));
        }
        for (size_t e = 0; e < params.size(); ++e) {
          const double err = std::abs(got.params[i][e] - params[e]);
          ++report.params;
          if (err > kParamTolerance) ++report.params_mismatched;
          report.max_param_error = std::max(report.max_param_error, err);
        }
      }
    }
  }
  return report;
}

}  // namespace demod
