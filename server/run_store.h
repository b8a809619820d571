// The coordinator's durable run state: what a restarted coordinator needs to carry on the same
// run (its config, how many steps closed, the tensor table, who joined and left). One file,
// <dir>/run.json, replaced atomically on every Save, so after a crash the directory holds either
// the previous state or the new one, never a mix: Save writes <dir>/run.json.tmp, fsyncs it,
// renames it over run.json and fsyncs the directory. A run.json.tmp left by a crash is never
// read and is overwritten by the next Save.
//
// File format (JSON, UTF-8; each top-level field on its own line, array elements one per line):
//
//   {"format": "demod-run-state",
//    "version": 1,
//    "config": {...},           the RunConfigToJson object, embedded (not a string)
//    "completed_steps": N,      >= 0
//    "tensors": [{"name": "w", "shape": [4, 8], "dtype": "float32"}, ...],
//                               dtype one of float32, bfloat16, float16, float64; empty before
//                               the first join, else valid as ValidateTensorSpecs says
//    "history": [{"step": S, "unix_ms": T, "worker": "a", "event": "join", "reason": ""}, ...]}
//                               oldest first; event one of join, leave, evict; step >= 0
//
// Every field is required and unknown fields are rejected: a change to the format is a new
// version, and a build refuses versions it does not know rather than misreading them.
//
// One coordinator process per state directory; nothing here locks it against a second one.
// RunStore is a value (the directory's path); thread-compatible.
#ifndef DEMOD_SERVER_RUN_STORE_H_
#define DEMOD_SERVER_RUN_STORE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/run_config.h"
#include "demod/v1/coordinator.pb.h"

namespace demod {

struct MembershipEvent {
  int64_t step = 0;     // the step open (or next to open) when it happened
  int64_t unix_ms = 0;  // wall-clock time, for people reading the history
  std::string worker;
  std::string event;  // "join", "leave", "evict"
  std::string reason;
};

struct PersistedRun {
  RunConfig config;
  int64_t completed_steps = 0;
  std::vector<v1::TensorSpec> tensors;   // empty before the first join
  std::vector<MembershipEvent> history;  // oldest first
};

class RunStore {
 public:
  // Enough history to see why the run looks as it does, bounded so the file (rewritten every
  // Save) stays small however long the run goes.
  static constexpr size_t kMaxHistory = 1000;

  // Creates `dir` (and its parents) if missing. Fails, naming the path, when it cannot be
  // created (the errno's code, e.g. PERMISSION_DENIED), is not a directory
  // (FAILED_PRECONDITION), or is not writable (PERMISSION_DENIED), so that a coordinator finds
  // out at start rather than at its first Save.
  static absl::StatusOr<RunStore> Open(const std::string& dir);

  // The stored run; std::nullopt when the directory holds none yet. DATA_LOSS naming the file
  // when it does not parse or fails validation (format, version, config as ParseRunConfig
  // reads it, tensor table, steps); the errno's code for a file that cannot be read.
  absl::StatusOr<std::optional<PersistedRun>> Load() const;

  // Replaces the stored run atomically (see above), keeping only the last kMaxHistory events.
  // INVALID_ARGUMENT, writing nothing, for a run that Load would reject; the errno's code,
  // naming the file, when writing fails (the stored run is then unchanged).
  absl::Status Save(const PersistedRun& run) const;

  const std::string& dir() const { return dir_; }

 private:
  explicit RunStore(std::string dir) : dir_(std::move(dir)) {}

  std::string dir_;
};

}  // namespace demod

#endif  // DEMOD_SERVER_RUN_STORE_H_
