// demod-worker: trains a model with the DeMo optimizer as one worker of a coordinated run.
//
//   demod-worker --coordinator 127.0.0.1:7070 --model gpt --data sotu --data_dir data
//
// Exit codes: 0 when the run finished, the step budget was spent or a signal stopped it
// (after a checkpoint); 1 when training could not go on (refused join, coordinator gone for
// good, a checkpoint or data error); 2 for bad flags or a device this machine cannot run.
#include <ATen/Parallel.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "common/program.h"
#include "worker/programs/device_name.h"
#include "worker/training/trainer.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070", "the coordinator's address");
ABSL_FLAG(std::string, name, "", "this worker's name in the run (default: host-pid)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda, cuda:N or auto");
ABSL_FLAG(std::string, model, "gpt", "gpt, cnn or torchscript (with --model_file)");
ABSL_FLAG(std::string, model_file, "", "a TorchScript module whose forward(x, y) is the loss");
ABSL_FLAG(int64_t, gpt_layers, 4, "GPT: transformer blocks");
ABSL_FLAG(int64_t, gpt_d_model, 128, "GPT: model width");
ABSL_FLAG(int64_t, gpt_heads, 4, "GPT: attention heads");
ABSL_FLAG(int64_t, context, 128, "GPT: context length in bytes");
ABSL_FLAG(std::string, data, "sotu", "sotu (text) or fashion-mnist (images)");
ABSL_FLAG(std::string, data_dir, "data", "where scripts/fetch_data.sh put the data");
ABSL_FLAG(int64_t, steps, 0, "leave after this many steps (0: until the run finishes)");
ABSL_FLAG(int64_t, batch_size, 16, "samples per micro-batch");
ABSL_FLAG(int32_t, micro_batches, 1, "micro-batches per step");
ABSL_FLAG(double, compute_slowdown, 1.0,
          "benchmarks of mixed fleets only: sleep after each step's compute so this worker runs "
          "this many times slower (>= 1; 1: off)");
ABSL_FLAG(int64_t, max_batch_samples, 0,
          "with batch balancing, the most samples this worker computes in a step (what its "
          "memory holds, in micro-batches of --batch_size); 0: no limit");
ABSL_FLAG(uint64_t, seed, 0, "initialization and data order (default: from the name)");
ABSL_FLAG(int64_t, validation_interval, 10, "steps between validation losses; 0: never");
ABSL_FLAG(int64_t, validation_samples, 64,
          "held-out samples in each validation loss (text: windows of --context bytes spread "
          "evenly over the validation split; images: the first test images), evaluated 64 at "
          "a time");
ABSL_FLAG(std::string, checkpoint_dir, "", "save and resume parameters, momentum, step here");
ABSL_FLAG(int64_t, checkpoint_interval, 50, "steps between checkpoints");
ABSL_FLAG(std::string, csv, "", "write one line per step here");
ABSL_FLAG(std::string, summary_json, "",
          "when the worker ends without an error, write its outcome here as JSON: run_finished, "
          "steps, last_step, losses, bytes, wall_seconds and the parameters' fingerprint");
ABSL_FLAG(std::string, token_file, "", "file holding the coordinator's bearer token");
ABSL_FLAG(std::string, tls_ca, "", "CA (PEM) of the coordinator's certificate; enables TLS");
ABSL_FLAG(std::string, tls_cert, "", "client certificate (PEM) for mTLS");
ABSL_FLAG(std::string, tls_key, "", "client key (PEM) for mTLS");
ABSL_FLAG(int32_t, threads, 0, "CPU threads for LibTorch (0: its default)");
ABSL_FLAG(bool, progress, false, "a live status line on stderr (default: when it is a terminal)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(absl::Duration, reconnect_for, absl::Minutes(8),
          "how long to keep reconnecting through one coordinator outage before exiting with "
          "UNAVAILABLE (e.g. 30s, 8m, 1h)");
ABSL_FLAG(int64_t, fault_perturb_step, 0,
          "testing: nudge a parameter after this step, so the coordinator must resync it");

namespace demod {
namespace {

at::Device ParseDevice(const std::string& name) {
  if (name == "cpu") return at::kCPU;
  if (name == "auto") return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    int index = 0;
    if (name != "cuda" && !absl::SimpleAtoi(name.substr(5), &index)) {
      ExitWithReason(kExitUsage, absl::StrCat("--device ", name, ": expected cuda:<index>"));
    }
    if (!at::hasCUDA()) {
      ExitWithReason(kExitUsage,
                     absl::StrCat("--device ", name,
                                  ": this LibTorch or machine has no CUDA (use --device cpu)"));
    }
    return at::Device(at::kCUDA, static_cast<int8_t>(index));
  }
  ExitWithReason(kExitUsage,
                 absl::StrCat("--device ", name, ": expected cpu, cuda, cuda:N or auto"));
}

// The outcome of a worker, for programs that started it (scripts/run.sh, the process tests):
// a file they read instead of this program's log. The fingerprint is 16 hex digits, since a
// 64-bit integer does not survive every JSON reader.
std::string SummaryJson(const TrainingSummary& s) {
  nlohmann::json json = {
      {"run_finished", s.run_finished},
      {"steps", s.steps},
      {"steps_skipped", s.steps_skipped},
      {"last_step", s.last_step},
      {"last_loss", s.last_loss},
      {"last_validation_loss", nullptr},
      {"bytes_sent", s.bytes_sent},
      {"bytes_received", s.bytes_received},
      {"dense_fp32_bytes", s.dense_fp32_bytes},
      {"wall_seconds", s.wall_seconds},
      {"fingerprint", absl::StrFormat("%016x", s.fingerprint)},
  };
  if (std::isfinite(s.last_validation_loss)) json["last_validation_loss"] = s.last_validation_loss;
  return json.dump(2) + "\n";
}

v1::Hardware DescribeHardware(const at::Device& device) {
  v1::Hardware hardware;
  hardware.set_threads(static_cast<uint32_t>(at::get_num_threads()));
  if (device.is_cuda()) {
    hardware.set_device_kind(v1::DEVICE_KIND_CUDA);
    hardware.set_device_name(CudaDeviceName(device.has_index() ? device.index() : 0));
  } else {
    hardware.set_device_kind(v1::DEVICE_KIND_CPU);
    hardware.set_device_name(CpuModelName());
    hardware.set_memory_bytes(static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                              static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE)));
  }
  hardware.add_supported_dtypes(v1::DTYPE_FLOAT32);
  hardware.add_supported_dtypes(v1::DTYPE_BFLOAT16);
  return hardware;
}

int Main() {
  absl::StatusOr<LogLevel> level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) ExitWithReason(kExitUsage, level.status().message());
  SetLogLevel(*level);
  if (absl::GetFlag(FLAGS_threads) > 0) at::set_num_threads(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_batch_size) < 1) ExitWithReason(kExitUsage, "--batch_size must be >= 1");
  if (absl::GetFlag(FLAGS_validation_samples) < 1) {
    ExitWithReason(kExitUsage, "--validation_samples must be >= 1");
  }
  if (!(absl::GetFlag(FLAGS_compute_slowdown) >= 1 &&
        absl::GetFlag(FLAGS_compute_slowdown) <= 1000)) {
    ExitWithReason(kExitUsage, "--compute_slowdown must be in [1, 1000]");
  }
  if (absl::GetFlag(FLAGS_max_batch_samples) < 0) {
    ExitWithReason(kExitUsage, "--max_batch_samples must be >= 0");
  }
  if (absl::GetFlag(FLAGS_micro_batches) < 1)
    ExitWithReason(kExitUsage, "--micro_batches must be >= 1");
  if (absl::GetFlag(FLAGS_steps) < 0) ExitWithReason(kExitUsage, "--steps must be >= 0");
  const at::Device device = ParseDevice(absl::GetFlag(FLAGS_device));

  std::string name = absl::GetFlag(FLAGS_name);
  if (name.empty()) {
    char host[256] = "worker";
    gethostname(host, sizeof(host) - 1);
    name = absl::StrCat(host, "-", getpid());
  }
  const uint64_t seed =
      absl::GetFlag(FLAGS_seed) != 0 ? absl::GetFlag(FLAGS_seed) : std::hash<std::string>()(name);

  ModelSpec spec;
  spec.kind = absl::GetFlag(FLAGS_model);
  spec.gpt.layers = absl::GetFlag(FLAGS_gpt_layers);
  spec.gpt.d_model = absl::GetFlag(FLAGS_gpt_d_model);
  spec.gpt.heads = absl::GetFlag(FLAGS_gpt_heads);
  spec.gpt.context = absl::GetFlag(FLAGS_context);
  spec.torchscript_path = absl::GetFlag(FLAGS_model_file);
  spec.seed = seed;
  if (!spec.torchscript_path.empty() && spec.kind == "gpt") spec.kind = "torchscript";
  absl::StatusOr<std::unique_ptr<Model>> model = MakeModel(spec, device);
  if (!model.ok()) ExitWithReason(kExitUsage, model.status().message());
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = OpenDataset(
      absl::GetFlag(FLAGS_data), absl::GetFlag(FLAGS_data_dir), absl::GetFlag(FLAGS_context), seed);
  if (!dataset.ok()) ExitWithReason(kExitFailed, dataset.status().message());
  Log(LogLevel::kInfo, absl::StrCat("model: ", (*model)->Describe()));
  Log(LogLevel::kInfo, absl::StrCat("data: ", (*dataset)->Describe()));

  TrainerOptions options;
  options.device = device;
  options.client.target = absl::GetFlag(FLAGS_coordinator);
  options.client.join.set_worker_name(name);
  options.client.join.set_max_batch_samples(
      static_cast<uint64_t>(absl::GetFlag(FLAGS_max_batch_samples)));
  *options.client.join.mutable_hardware() = DescribeHardware(device);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    options.client.token = std::string(
        absl::StripAsciiWhitespace(ReadFileOrExit(absl::GetFlag(FLAGS_token_file), "token")));
  }
  if (!absl::GetFlag(FLAGS_tls_ca).empty()) {
    ClientTls tls;
    tls.root_ca_pem = ReadFileOrExit(absl::GetFlag(FLAGS_tls_ca), "TLS CA");
    if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
      tls.client_cert_pem = ReadFileOrExit(absl::GetFlag(FLAGS_tls_cert), "TLS certificate");
      tls.client_key_pem = ReadFileOrExit(absl::GetFlag(FLAGS_tls_key), "TLS key");
    }
    options.client.tls = std::move(tls);
  } else if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
    ExitWithReason(kExitUsage, "--tls_cert needs --tls_ca");
  }
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.micro_batches = absl::GetFlag(FLAGS_micro_batches);
  options.compute_slowdown = absl::GetFlag(FLAGS_compute_slowdown);
  options.max_steps = absl::GetFlag(FLAGS_steps);
  options.validation_interval = absl::GetFlag(FLAGS_validation_interval);
  options.validation_samples = absl::GetFlag(FLAGS_validation_samples);
  options.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  options.checkpoint_interval = absl::GetFlag(FLAGS_checkpoint_interval);
  options.csv_path = absl::GetFlag(FLAGS_csv);
  options.reconnect_for = absl::GetFlag(FLAGS_reconnect_for);
  if (options.reconnect_for < absl::ZeroDuration()) {
    ExitWithReason(kExitUsage, "--reconnect_for must be >= 0");
  }
  options.progress = absl::GetFlag(FLAGS_progress) || isatty(STDERR_FILENO);
  options.fault_perturb_step = absl::GetFlag(FLAGS_fault_perturb_step);

  Trainer trainer(model->get(), dataset->get(), std::move(options));
  // A stop finishes the step in progress (or ends a wait) and checkpoints.
  OnStopSignal([&trainer](int signal) {
    Log(LogLevel::kInfo, absl::StrCat("signal ", signal, ": stopping after this step"));
    trainer.RequestStop();
  });

  absl::StatusOr<TrainingSummary> summary = trainer.Run();
  if (!summary.ok()) ExitWithReason(kExitFailed, summary.status().ToString());
  const double steps = std::max<int64_t>(summary->steps, 1);
  Log(LogLevel::kInfo,
      absl::StrFormat("%s after %d steps (run step %d) in %.1f s: loss %.4f, validation %.4f; "
                      "per step %.1f kB up, %.1f kB down vs %.1f kB for an fp32 all-reduce; "
                      "fingerprint %016x",
                      summary->run_finished ? "run finished" : "stopped", summary->steps,
                      summary->last_step, summary->wall_seconds, summary->last_loss,
                      summary->last_validation_loss, summary->bytes_sent / steps / 1024,
                      summary->bytes_received / steps / 1024,
                      summary->dense_fp32_bytes / steps / 1024, summary->fingerprint));
  if (!absl::GetFlag(FLAGS_summary_json).empty()) {
    absl::Status written =
        WriteFileWhole(absl::GetFlag(FLAGS_summary_json), SummaryJson(*summary), "summary");
    if (!written.ok()) ExitWithReason(kExitFailed, written.message());
  }
  return 0;
}

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  demod::ParseFlagsOrExit(
      argc, argv, "demod-worker",
      "demod-worker --coordinator HOST:PORT [--device cpu|cuda|cuda:N|auto] [--model gpt|cnn] "
      "[--data sotu|fashion-mnist --data_dir DIR] [--checkpoint_dir DIR]");
  demod::KeepLargeBlocksInHeap();
  return demod::Main();
}
