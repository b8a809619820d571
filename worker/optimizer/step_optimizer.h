// What a coordinated training loop needs from an optimizer whose steps go through an Exchange:
// the DeMo optimizer (demo_optimizer.h) and the dense AdamW baseline (dense_adamw.h).
//
// Each Step sends one payload for the step after step_count() and applies the aggregate.
// CatchUp applies an aggregate this worker did not contribute to (a joiner catching up).
// Two kinds of state: LocalState is this worker's own (DeMo's momentum: it diverges by
// design) and survives reconnections in checkpoints; SharedState is identical on every worker
// (AdamW's moments) and travels with the parameters to a joiner.
//
// Used from one thread.
#ifndef DEMOD_WORKER_OPTIMIZER_STEP_OPTIMIZER_H_
#define DEMOD_WORKER_OPTIMIZER_STEP_OPTIMIZER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/sparse_payload.h"
#include "worker/optimizer/named_tensor.h"

namespace demod {

// Bandwidth of the last step, in bytes on the wire.
struct StepTraffic {
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  int64_t dense_fp32_bytes = 0;  // what one fp32 gradient exchange of the same tensors is
};

class StepOptimizer {
 public:
  virtual ~StepOptimizer() = default;

  virtual absl::Status Step() = 0;
  virtual void ZeroGrad() = 0;
  virtual absl::Status CatchUp(const StepAggregate& aggregate) = 0;

  virtual void set_lr(double lr) = 0;
  virtual double lr() const = 0;
  virtual int64_t step_count() const = 0;
  virtual void set_step_count(int64_t step) = 0;
  virtual const StepTraffic& last_traffic() const = 0;

  virtual std::vector<NamedTensor> LocalState() const = 0;
  virtual std::vector<NamedTensor> SharedState() const = 0;
};

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_STEP_OPTIMIZER_H_
