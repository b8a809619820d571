// The dense baseline DeMo is measured against: data-parallel AdamW on averaged gradients, as
// an all-reduce would give it, carried through the same exchange and coordinator.
//
// Each step every worker sends its whole gradient (f32 or bf16 values; the payload's chunks are
// full, so the wire carries no indices), the coordinator averages, and every worker applies
// AdamW to the mean:
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// with t the run's step, so a joiner that received p, m and v (SharedState) continues exactly.
// The update is computed element by element in one fixed order of roundings (adamw_update.h):
// on the CPU, or in a CUDA build by a CUDA kernel for float32 CUDA parameters (cuda_updates.h),
// with the same bits on every worker whatever its thread count or device.
// The moments are shared, not this worker's own: a checkpoint does not hold them, and a
// restarted worker that becomes the seed (every other worker gone) starts them from zero.
//
// Used from one thread.
#ifndef DEMOD_WORKER_OPTIMIZER_DENSE_ADAMW_H_
#define DEMOD_WORKER_OPTIMIZER_DENSE_ADAMW_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/value_encoding.h"
#include "worker/optimizer/exchange.h"
#include "worker/optimizer/step_optimizer.h"

namespace demod {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t chunk = 64;  // shapes the payload's chunks (docs/wire-format.md), not the math
  ValueEncoding encoding = ValueEncoding::kFloat32;  // f32 or bf16
  // In a CUDA build, float32 CUDA parameters are updated on their device (cuda_updates.h);
  // false makes them round-trip through the CPU, as CPU-only builds do. The same bits either way.
  bool device_updates = true;
};

class DenseAdamW final : public StepOptimizer {
 public:
  // Registers the parameters' table (every chunk full) with `exchange`. INVALID_ARGUMENT for
  // an encoding other than f32/bf16, non-floating or duplicate parameters.
  static absl::StatusOr<std::unique_ptr<DenseAdamW>> Create(std::vector<NamedTensor> params,
                                                            const AdamWOptions& options,
                                                            Exchange* exchange);

  absl::Status Step() override;
  void ZeroGrad() override;
  absl::Status CatchUp(const StepAggregate& aggregate) override;

  void set_lr(double lr) override { options_.lr = lr; }
  double lr() const override { return options_.lr; }
  int64_t step_count() const override { return step_; }
  void set_step_count(int64_t step) override { step_ = step; }
  const StepTraffic& last_traffic() const override { return traffic_; }

  std::vector<NamedTensor> LocalState() const override { return {}; }
  // "adamw.m.<name>", "adamw.v.<name>".
  std::vector<NamedTensor> SharedState() const override;

 private:
  DenseAdamW(std::vector<NamedTensor> params, const AdamWOptions& options, LayoutTable table,
             Exchange* exchange);
  // The mean gradient from an aggregate, then the AdamW update of step `step`.
  absl::Status Apply(const StepAggregate& aggregate, int64_t step);

  std::vector<NamedTensor> params_;
  AdamWOptions options_;
  LayoutTable table_;
  Exchange* exchange_;
  std::vector<at::Tensor> m_;
  std::vector<at::Tensor> v_;
  int64_t step_ = 0;
  StepTraffic traffic_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_DENSE_ADAMW_H_
