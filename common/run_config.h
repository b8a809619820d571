// The configuration of one training run, owned by the coordinator and sent to every worker
// when it joins. Read from an optional YAML or JSON file, then overridden by flags; every
// field is validated with a message that names it.
//
// Plain value; thread-compatible.
#ifndef DEMOD_COMMON_RUN_CONFIG_H_
#define DEMOD_COMMON_RUN_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/aggregation.h"
#include "common/value_encoding.h"

namespace demod {

// Learning rate at a step: linear warm-up from 0 over warmup_steps, then cosine decay from
// base_lr to base_lr * final_factor at total_steps (the paper's schedule).
struct LrSchedule {
  double base_lr = 4e-4;
  int64_t warmup_steps = 250;
  double final_factor = 0.1;
};
double LearningRateAt(const LrSchedule& schedule, int64_t step, int64_t total_steps);

struct OptimizerConfig {
  // kDemo: the DeMo optimizer. kAdamW: the dense baseline, what an all-reduce of gradients
  // does: every worker sends its whole gradient (f32 or bf16), the coordinator averages, and
  // every worker applies AdamW to the mean (the compression_* fields do not apply, except
  // compression_chunk, which shapes the dense frames).
  enum class Algorithm { kDemo, kAdamW };
  Algorithm algorithm = Algorithm::kDemo;
  LrSchedule lr;
  double compression_decay = 0.999;
  int64_t compression_topk = 32;
  int64_t compression_chunk = 64;
  double weight_decay = 0.0;
  // What a payload's values travel as. Unless a file or flag names it (value_encoding_named),
  // it follows the algorithm they name (DefaultValueEncoding): 1-bit values for DeMo, bf16
  // gradients for AdamW.
  ValueEncoding value_encoding = ValueEncoding::kSign;
  bool value_encoding_named = false;  // where the configuration came from, not part of it
  double adam_beta1 = 0.9;            // kAdamW
  double adam_beta2 = 0.95;
  double adam_eps = 1e-8;
};
// "demo" / "adamw".
absl::string_view AlgorithmName(OptimizerConfig::Algorithm algorithm);

// The value encoding of a run that names its algorithm and no encoding. DeMo: sign, which in
// the comparison over seeds (docs/benchmarks.md, "The full sweep over three seeds") ended
// closest to AdamW of the chunk-64 rows while uploading half of bf16's bytes. AdamW: bf16,
// which matched f32's loss to 4 digits at half the bytes.
ValueEncoding DefaultValueEncoding(OptimizerConfig::Algorithm algorithm);
// Whether the algorithm can send values in `encoding` (AdamW: f32 and bf16 only).
bool AlgorithmSends(OptimizerConfig::Algorithm algorithm, ValueEncoding encoding);

// When a step closes if not every member has sent its payload.
struct DeadlinePolicy {
  enum class Kind { kFixed, kAdaptive };
  Kind kind = Kind::kAdaptive;
  absl::Duration fixed = absl::Seconds(30);  // kFixed
  // kAdaptive: median + k * MAD of the last `window` step durations, within [floor, ceiling].
  double mad_multiplier = 5.0;
  int window = 20;
  absl::Duration floor = absl::Seconds(2);
  absl::Duration ceiling = absl::Seconds(120);
};

// How much each worker computes per step. By default every worker computes its own batch
// (its --batch_size). With balance, the coordinator shares `global` samples per step among the
// active workers in proportion to their measured throughput (server/batch_balancer.h), so a
// mixed fleet finishes its compute together.
// `weighting`: how the aggregate combines the contributions (common/aggregation.h): equally,
// as the reference does, or by the samples behind each (with balance, a worker given a third of
// the batch counts for a third). A file that sets `balance` and not `weighting` gets samples
// with balance and equal without: balanced runs trained a little better weighted
// (docs/coordinator.md, "Batch balancing").
struct BatchPolicy {
  int64_t global = 0;  // samples per step over all workers; >= 1 with balance
  bool balance = false;
  Weighting weighting = Weighting::kEqual;
};

struct RunConfig {
  std::string run_id;  // [A-Za-z0-9._-]{1,64}
  OptimizerConfig optimizer;
  int min_workers = 1;
  int max_workers = 64;
  int64_t total_steps = 1000;
  int64_t fingerprint_interval = 10;  // steps between parameter fingerprints; 0: never
  DeadlinePolicy deadline;
  BatchPolicy batch;
  // A member is evicted once it has missed this many steps in a row and sent no payload (on
  // time or late) for heartbeat_timeout: a slow worker that skips steps is not a stuck one.
  int max_missed_steps = 3;
  absl::Duration heartbeat_timeout = absl::Seconds(15);
  // With no member holding the run's parameters (after a coordinator restart, or once every
  // member left), a worker whose parameters are behind the run's completed steps would roll
  // it back if it became the seed: it is kept waiting this long for a more current one.
  absl::Duration stale_seed_grace = absl::Seconds(30);
  int64_t max_frame_bytes = 1 << 20;
  // A member's outbound queue may hold this many steps of aggregates (on top of one parameter
  // transfer) before the member is evicted as a slow consumer: a worker that stops reading
  // cannot make the coordinator hold a message per step for it.
  int outbound_queue_steps = 8;

  // INVALID_ARGUMENT naming the first field out of range, e.g.
  // "optimizer.compression_topk must be >= 1, got 0".
  absl::Status Validate() const;
};

// Parses YAML or JSON (JSON is YAML) with the field names above, nested as in the structs
// ("optimizer: {lr: {base_lr: 4e-4}}", "batch: {global: 96, balance: true}"; durations as
// seconds, e.g. "deadline: {fixed_s: 30}";
// kinds and encodings as strings "fixed"/"adaptive", "f32"/"bf16"/"f16"/"sign",
// "equal"/"samples"). Unknown
// fields are errors. Fields not given keep the defaults of `base`. The result is validated.
absl::StatusOr<RunConfig> ParseRunConfig(absl::string_view text, const RunConfig& base = {});
absl::StatusOr<RunConfig> ReadRunConfigFile(const std::string& path, const RunConfig& base = {});

// `config` as one line of JSON with every field, named and nested as ParseRunConfig reads
// them, so that ParseRunConfig(RunConfigToJson(c)) gives back c: numbers are printed in the
// shortest form that reads back as the same double, and durations as seconds, which come back
// to the quarter-nanosecond tick for any duration under 2^21 s (about 24 days; beyond that a
// double of seconds cannot hold every tick). Meant for valid configs: a non-finite number or an
// infinite duration, which Validate() rejects, is written as null.
std::string RunConfigToJson(const RunConfig& config);

}  // namespace demod

#endif  // DEMOD_COMMON_RUN_CONFIG_H_
