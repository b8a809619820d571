// demod-coordinator: admits workers, sequences synchronous DeMo steps, aggregates their sparse
// payloads and streams the aggregate back; serves Prometheus metrics and gRPC health.
//
// The run's configuration comes from --config (YAML or JSON, see common/run_config.h), then
// the run flags below override single fields. With --state_dir the run survives restarts.
//
// Exit codes: 0 when the run finished or a signal stopped the coordinator; 1 when it could not
// start (address in use, unreadable state, an unwritable --port_file); 2 for bad flags or
// configuration.

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/program.h"
#include "server/coordinator_server.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7070",
          "gRPC address to serve workers on; port 0 picks a free one (see --port_file)");
ABSL_FLAG(std::string, port_file, "",
          "once serving, write the gRPC port to this file (a number and a newline; the file "
          "appears whole), so whoever started the coordinator knows where it listens");
ABSL_FLAG(std::string, metrics, "0.0.0.0:9090",
          "address of the Prometheus /metrics endpoint; empty for none");
ABSL_FLAG(std::string, state_dir, "",
          "directory holding the run's state; a restarted coordinator resumes from it");
ABSL_FLAG(std::string, config, "", "run configuration file (YAML or JSON)");
ABSL_FLAG(std::string, token_file, "",
          "file holding a bearer token every worker must present; empty for none");
ABSL_FLAG(std::string, tls_cert, "", "server certificate chain (PEM file); enables TLS");
ABSL_FLAG(std::string, tls_key, "", "server private key (PEM file)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "CA (PEM file) that must have signed workers' certificates (mTLS)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(bool, exit_when_finished, true, "exit once all steps of the run are done");
// Run overrides (unset: the config file's value, else the default).
ABSL_FLAG(std::string, run_id, "", "run id; default: run-<UTC time>, or the saved run's");
ABSL_FLAG(std::optional<int>, min_workers, std::nullopt, "workers needed to train");
ABSL_FLAG(std::optional<int>, max_workers, std::nullopt, "most workers admitted");
ABSL_FLAG(std::optional<int64_t>, total_steps, std::nullopt, "steps of the run");
ABSL_FLAG(std::optional<double>, lr, std::nullopt, "base learning rate");
ABSL_FLAG(std::optional<int64_t>, warmup_steps, std::nullopt, "learning-rate warm-up steps");
ABSL_FLAG(std::optional<int64_t>, topk, std::nullopt, "DCT coefficients sent per chunk");
ABSL_FLAG(std::optional<int64_t>, chunk, std::nullopt, "target DCT chunk size");
ABSL_FLAG(std::optional<double>, decay, std::nullopt, "momentum decay (compression_decay)");
ABSL_FLAG(std::optional<double>, weight_decay, std::nullopt, "decoupled weight decay");
ABSL_FLAG(std::string, value_encoding, "",
          "f32, bf16, f16 or sign (unset: sign with demo, bf16 with adamw)");
ABSL_FLAG(std::string, optimizer, "",
          "demo (default), or adamw: the dense baseline (whole gradients, f32 or bf16)");
ABSL_FLAG(std::optional<double>, step_deadline_s, std::nullopt,
          "a fixed step deadline in seconds (default: adaptive)");
ABSL_FLAG(std::optional<int64_t>, fingerprint_interval, std::nullopt,
          "steps between parameter fingerprints; 0: never");
ABSL_FLAG(std::optional<double>, heartbeat_timeout_s, std::nullopt,
          "evict a worker silent this long");
ABSL_FLAG(std::optional<double>, stale_seed_grace_s, std::nullopt,
          "with no member holding the run's parameters, how long a worker behind the run's "
          "completed steps waits for a more current one before its parameters become the run's");
ABSL_FLAG(std::optional<int>, outbound_queue_steps, std::nullopt,
          "steps of aggregates a worker may leave unread before it is evicted as a slow consumer");

namespace demod {
namespace {

// The run id when neither flags nor the config file name one: the saved run's, if the state
// directory holds one, else a new one from the time.
std::string DefaultRunId() {
  if (!absl::GetFlag(FLAGS_state_dir).empty()) {
    absl::StatusOr<RunStore> store = RunStore::Open(absl::GetFlag(FLAGS_state_dir));
    if (store.ok()) {
      absl::StatusOr<std::optional<PersistedRun>> run = store->Load();
      if (run.ok() && run->has_value()) return (*run)->config.run_id;
    }
  }
  return absl::StrCat("run-", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone()));
}

// The single-field flags given on the command line, over `config`.
void ApplyFieldFlags(RunConfig& config) {
  if (!absl::GetFlag(FLAGS_run_id).empty()) config.run_id = absl::GetFlag(FLAGS_run_id);
  if (auto v = absl::GetFlag(FLAGS_min_workers)) config.min_workers = *v;
  if (auto v = absl::GetFlag(FLAGS_max_workers)) config.max_workers = *v;
  if (auto v = absl::GetFlag(FLAGS_total_steps)) config.total_steps = *v;
  if (auto v = absl::GetFlag(FLAGS_lr)) config.optimizer.lr.base_lr = *v;
  if (auto v = absl::GetFlag(FLAGS_warmup_steps)) config.optimizer.lr.warmup_steps = *v;
  if (auto v = absl::GetFlag(FLAGS_topk)) config.optimizer.compression_topk = *v;
  if (auto v = absl::GetFlag(FLAGS_chunk)) config.optimizer.compression_chunk = *v;
  if (auto v = absl::GetFlag(FLAGS_decay)) config.optimizer.compression_decay = *v;
  if (auto v = absl::GetFlag(FLAGS_weight_decay)) config.optimizer.weight_decay = *v;
  if (auto v = absl::GetFlag(FLAGS_fingerprint_interval)) config.fingerprint_interval = *v;
  if (auto v = absl::GetFlag(FLAGS_outbound_queue_steps)) config.outbound_queue_steps = *v;
  if (auto v = absl::GetFlag(FLAGS_heartbeat_timeout_s)) {
    config.heartbeat_timeout = absl::Seconds(*v);
  }
  if (auto v = absl::GetFlag(FLAGS_stale_seed_grace_s)) config.stale_seed_grace = absl::Seconds(*v);
  if (auto v = absl::GetFlag(FLAGS_step_deadline_s)) {
    config.deadline.kind = DeadlinePolicy::Kind::kFixed;
    config.deadline.fixed = absl::Seconds(*v);
  }
  if (absl::GetFlag(FLAGS_optimizer) == "adamw") {
    config.optimizer.algorithm = OptimizerConfig::Algorithm::kAdamW;
  } else if (absl::GetFlag(FLAGS_optimizer) == "demo") {
    config.optimizer.algorithm = OptimizerConfig::Algorithm::kDemo;
  } else if (!absl::GetFlag(FLAGS_optimizer).empty()) {
    ExitWithReason(kExitUsage, absl::StrCat("--optimizer must be demo or adamw, got '",
                                            absl::GetFlag(FLAGS_optimizer), "'"));
  }
  if (!absl::GetFlag(FLAGS_value_encoding).empty()) {
    absl::StatusOr<ValueEncoding> encoding =
        ParseValueEncoding(absl::GetFlag(FLAGS_value_encoding));
    if (!encoding.ok()) ExitWithReason(kExitUsage, encoding.status().message());
    config.optimizer.value_encoding = *encoding;
    config.optimizer.value_encoding_named = true;
  } else if (!absl::GetFlag(FLAGS_optimizer).empty() && !config.optimizer.value_encoding_named) {
    // The algorithm the flag names decides the encoding that neither a flag nor the file named
    // (the file's own algorithm may have chosen one, and the flag overrides that algorithm).
    config.optimizer.value_encoding = DefaultValueEncoding(config.optimizer.algorithm);
  }
}

RunConfig RunConfigFromFlags() {
  RunConfig config;
  config.run_id = DefaultRunId();
  if (!absl::GetFlag(FLAGS_config).empty()) {
    // The file is read over the flags as well as under them, so that the file is judged with
    // the values the flags will give it: `min_workers: 100` in the file with
    // `--max_workers 128` is a valid run, though the default max_workers is 64.
    RunConfig base = config;
    ApplyFieldFlags(base);
    absl::StatusOr<RunConfig> parsed = ReadRunConfigFile(absl::GetFlag(FLAGS_config), base);
    if (!parsed.ok()) ExitWithReason(kExitUsage, parsed.status().message());
    config = *parsed;
  }
  ApplyFieldFlags(config);  // flags win over the file
  if (absl::Status valid = config.Validate(); !valid.ok())
    ExitWithReason(kExitUsage, valid.message());
  return config;
}

int Main() {
  absl::StatusOr<LogLevel> level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) ExitWithReason(kExitUsage, level.status().message());
  SetLogLevel(*level);

  CoordinatorServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.metrics_address = absl::GetFlag(FLAGS_metrics);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.config = RunConfigFromFlags();
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    options.token = std::string(
        absl::StripAsciiWhitespace(ReadFileOrExit(absl::GetFlag(FLAGS_token_file), "token")));
    if (options.token.empty()) {
      ExitWithReason(kExitUsage,
                     absl::StrCat("the token file ", absl::GetFlag(FLAGS_token_file), " is empty"));
    }
  }
  const bool has_cert = !absl::GetFlag(FLAGS_tls_cert).empty();
  const bool has_key = !absl::GetFlag(FLAGS_tls_key).empty();
  if (has_cert != has_key) ExitWithReason(kExitUsage, "--tls_cert and --tls_key go together");
  if (!has_cert && !absl::GetFlag(FLAGS_tls_client_ca).empty()) {
    ExitWithReason(kExitUsage, "--tls_client_ca needs --tls_cert and --tls_key");
  }
  if (has_cert) {
    TlsFiles tls;
    tls.cert_pem = ReadFileOrExit(absl::GetFlag(FLAGS_tls_cert), "TLS certificate");
    tls.key_pem = ReadFileOrExit(absl::GetFlag(FLAGS_tls_key), "TLS key");
    if (!absl::GetFlag(FLAGS_tls_client_ca).empty()) {
      tls.client_ca_pem = ReadFileOrExit(absl::GetFlag(FLAGS_tls_client_ca), "TLS client CA");
    }
    options.tls = std::move(tls);
  }

  absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
      CoordinatorServer::Start(std::move(options));
  if (!server.ok()) ExitWithReason(kExitFailed, server.status().ToString());

  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    absl::Status written = WriteFileWhole(absl::GetFlag(FLAGS_port_file),
                                          absl::StrCat((*server)->port(), "\n"), "port");
    if (!written.ok()) {
      (*server)->Shutdown();
      ExitWithReason(kExitFailed, written.message());
    }
  }

  // A signal is taken by a thread of its own (program.h), not inside gRPC's threads.
  OnStopSignal([s = server->get()](int signal) {
    Log(LogLevel::kInfo, absl::StrCat("signal ", signal, ": shutting down"));
    s->Shutdown();
  });

  // Without --exit_when_finished, status and metrics stay up after the run, until a signal.
  (*server)->Wait(/*until_finished=*/absl::GetFlag(FLAGS_exit_when_finished));
  (*server)->Shutdown();
  return 0;
}

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  demod::ParseFlagsOrExit(
      argc, argv, "demod-coordinator",
      "demod-coordinator [--config run.yaml] [--listen 0.0.0.0:7070] [--metrics 0.0.0.0:9090] "
      "[--state_dir DIR] [--token_file FILE] [--tls_cert FILE --tls_key FILE [--tls_client_ca "
      "FILE]]");
  demod::KeepLargeBlocksInHeap();
  return demod::Main();
}
