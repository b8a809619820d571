// Replays a GoldenRun through demod's real optimizer, codec and aggregation (one thread per
// simulated worker, joined by an InProcessHub) and measures how far the result is from the
// reference, against the tolerances of ../shared/golden/README.md.
#ifndef DEMOD_WORKER_REPLAY_REPLAY_H_
#define DEMOD_WORKER_REPLAY_REPLAY_H_

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/replay/golden_run.h"

namespace demod {

struct ReplayReport {
  int64_t chunks = 0;             // chunks compared, over steps, workers and tensors
  int64_t chunks_mismatched = 0;  // chunks whose index set differs from the reference's
  double max_value_error = 0;     // over coefficients selected by both
  double max_value_excess = 0;    // max of |err| - (1e-5 + 1e-4 |expected|); <= 0 passes
  double max_delta_error = 0;
  int64_t params = 0;             // parameter elements compared, over steps
  int64_t params_mismatched = 0;  // elements off by more than 1e-6
  double max_param_error = 0;
  double lr = 0;

  bool WithinTolerance() const;
  // One line: the measured errors and OK / FAIL.
  std::string Summary() const;
};

// Worker w keeps its parameters, gradients and momentum on devices[w % devices.size()]; on the
// CPU when `devices` is empty.
absl::StatusOr<ReplayReport> Replay(const GoldenRun& run,
                                    const std::vector<c10::Device>& devices = {});

}  // namespace demod

#endif  // DEMOD_WORKER_REPLAY_REPLAY_H_
