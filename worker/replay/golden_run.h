// A recorded run of the reference DeMo optimizer ("demod-golden-v1", see
// ../shared/golden/README.md): hyperparameters, initial parameters, every worker's gradient
// at every step, and what the reference produced after each step.
#ifndef DEMOD_WORKER_REPLAY_GOLDEN_RUN_H_
#define DEMOD_WORKER_REPLAY_GOLDEN_RUN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/optimizer/demo_options.h"

namespace demod {

struct GoldenPayload {
  std::vector<int64_t> chunk_grid;
  int64_t k = 0;
  std::vector<int64_t> indices;  // k per chunk, sorted within each chunk
  std::vector<double> values;
};

struct GoldenStep {
  std::vector<std::vector<double>> params_after;              // [param]
  std::vector<std::vector<std::vector<double>>> delta_after;  // [worker][param]
  std::vector<std::vector<GoldenPayload>> payload;            // [worker][param]
};

struct GoldenParam {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> init;
};

struct GoldenRun {
  DemoOptions options;
  int workers = 0;
  int steps = 0;
  std::vector<GoldenParam> params;
  std::vector<std::vector<std::vector<std::vector<float>>>> grads;  // [step][worker][param]
  std::vector<GoldenStep> expected;                                 // [step]
};

// INVALID_ARGUMENT with the JSON path of the first missing or inconsistent field.
absl::StatusOr<GoldenRun> ParseGoldenRun(const std::string& json_text);
// NOT_FOUND / INVALID_ARGUMENT with the file name.
absl::StatusOr<GoldenRun> ReadGoldenRun(const std::string& path);

}  // namespace demod

#endif  // DEMOD_WORKER_REPLAY_GOLDEN_RUN_H_
