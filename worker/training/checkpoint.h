// A worker's local checkpoint: its parameters, its DeMo momentum and the last step it
// applied, so a restarted worker resumes where it stopped (demod-worker --checkpoint_dir).
// One file, <dir>/checkpoint.bin, replaced atomically (write, fsync, rename, fsync the
// directory), so a crash mid-save leaves the previous checkpoint intact.
//
// Format: "DMC1", u32 run id length, run id, u64 step, u64 + bytes of the parameters and of
// the momentum (each in worker/optimizer/parameter_state.h's form), then a CRC-32C of all before.
//
// Thread-compatible.
#ifndef DEMOD_WORKER_TRAINING_CHECKPOINT_H_
#define DEMOD_WORKER_TRAINING_CHECKPOINT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace demod {

struct Checkpoint {
  std::string run_id;
  int64_t step = 0;
  std::string parameters;  // SerializeTensors of the model's parameters
  std::string momentum;    // SerializeTensors of DemoOptimizer::MomentumBuffers
};

// Creates `dir` if needed. The OS error with the path on failure.
absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint);
// std::nullopt when `dir` holds no checkpoint; DATA_LOSS naming the file when it is corrupt.
absl::StatusOr<std::optional<Checkpoint>> LoadCheckpoint(const std::string& dir);

}  // namespace demod

#endif  // DEMOD_WORKER_TRAINING_CHECKPOINT_H_
