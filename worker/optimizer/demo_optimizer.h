// DeMo: Decoupled Momentum Optimization (Peng, Quesnelle, Kingma, arXiv 2411.19870).
//
// Each worker keeps its own momentum; each step it sends only the fastest-moving part (the
// top-k coefficients of a chunked DCT of the momentum), every worker applies the sign of the
// aggregate of what all sent, so parameters stay identical while momenta diverge.
//
// Momentum is kept in the DCT domain: the transform is orthonormal and linear, so encoding
// only the new gradient each step and zeroing what was sent is the reference algorithm with
// one transform fewer per step (see docs/optimizer.md).
//
// Usage:
//   auto opt = DemoOptimizer::Create(model->named_parameters(), DemoOptions(4e-4), &exchange);
//   loss.backward(); absl::Status s = (*opt)->Step(); (*opt)->ZeroGrad();
//
// Parameters may live on any device, in float32, bfloat16 or float64; momentum and the
// transforms run in float32 (float64 for float64 parameters) on the parameter's device.
// Not thread-safe: one thread steps an optimizer. The Exchange must outlive it.
#ifndef DEMOD_WORKER_OPTIMIZER_DEMO_OPTIMIZER_H_
#define DEMOD_WORKER_OPTIMIZER_DEMO_OPTIMIZER_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sparse_payload.h"
#include "worker/optimizer/demo_options.h"
#if defined(DEMOD_WITH_CUDA)
#include "worker/optimizer/cuda_updates.h"
#endif
#include "worker/optimizer/exchange.h"
#include "worker/optimizer/step_optimizer.h"

namespace demod {

class DemoOptimizer final : public StepOptimizer {
 public:
  // Registers the parameters' table with `exchange`. INVALID_ARGUMENT for bad options, an
  // undefined or non-floating parameter, or duplicate names.
  static absl::StatusOr<std::unique_ptr<DemoOptimizer>> Create(std::vector<NamedTensor> params,
                                                               const DemoOptions& options,
                                                               Exchange* exchange);

  DemoOptimizer(const DemoOptimizer&) = delete;
  DemoOptimizer& operator=(const DemoOptimizer&) = delete;

  // One DeMo step from the parameters' current .grad() (a parameter without a gradient
  // contributes zero). When the step fails (a non-finite gradient: INVALID_ARGUMENT naming
  // the tensor; an exchange error) the parameters are untouched and the step's finite
  // gradient stays in the momentum, as for a contribution that missed its step: the next
  // Step continues from there.
  absl::Status Step() override;

  void ZeroGrad() override;

  // Applies the update of a step this worker did not contribute to (a joiner catching up on
  // the aggregates closed while its parameters were on their way, or a worker resyncing):
  // the parameters take the step's signed update at the current lr; momentum is untouched.
  // INVALID_ARGUMENT when the aggregate does not fit the table; the step count becomes its.
  absl::Status CatchUp(const StepAggregate& aggregate) override;

  // Where the next Step continues: the run's last closed step (after a join or a resume).
  void set_step_count(int64_t step) override { step_ = step; }

  // The learning rate, e.g. for a schedule.
  void set_lr(double lr) override { options_.lr(lr); }
  double lr() const override { return options_.lr(); }
  const DemoOptions& options() const { return options_; }
  const LayoutTable& layout_table() const { return table_; }
  int64_t step_count() const override { return step_; }

  // What the last step sent, before quantization to the wire encoding.
  const StepPayload& last_payload() const { return last_payload_; }
  const StepTraffic& last_traffic() const override { return last_traffic_; }

  // Momentum of parameter i in the parameter domain (an inverse DCT; for inspection).
  at::Tensor Momentum(size_t i) const;

  // The momentum buffers themselves (DCT domain, one per chunk-size group), named
  // "momentum.<group>": a checkpoint saves them and loads them back in place.
  std::vector<NamedTensor> MomentumBuffers() const;
  std::vector<NamedTensor> LocalState() const override { return MomentumBuffers(); }
  std::vector<NamedTensor> SharedState() const override { return {}; }

 private:
  // Tensors whose chunks have the same size and k share buffers, so the per-chunk work
  // (momentum update, selection, clearing) runs once per group rather than once per tensor.
  struct Group {
    int64_t chunk_size = 0;
    int64_t topk = 0;
    std::vector<size_t> members;       // indices into the table / params_
    std::vector<int64_t> first_chunk;  // per member: its first row in the buffers
    at::Tensor momentum;               // [chunks, chunk_size], DCT domain
    at::Tensor sent_indices;           // [chunks, topk], this step's selection
    at::Tensor sent_values;            // kept to restore the selection if it is not included
  };

  DemoOptimizer(std::vector<NamedTensor> params, const DemoOptions& options, LayoutTable table,
                Exchange* exchange);

  at::Tensor MomentumRows(size_t i) const;  // the rows of parameter i in its group's momentum
  absl::Status EncodeAccumulateSelect(Group& group);
  void TakeSelection(Group& group);
  void AddSelectionToPayload(const Group& group);
  void RestoreSelection();
  absl::Status ApplyAggregate(const StepAggregate& aggregate);

  DemoOptions options_;
  LayoutTable table_;
  Exchange* exchange_;
#if defined(DEMOD_WITH_CUDA)
  CudaSignedSteps cuda_steps_;  // steps 9-10 for float32 CUDA parameters
#endif
  std::vector<at::Tensor> params_;
  std::vector<Group> groups_;
  std::vector<std::pair<size_t, size_t>> group_of_;  // per param: (group, member position)
  int64_t step_ = 0;
  StepPayload last_payload_;
  StepTraffic last_traffic_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_DEMO_OPTIMIZER_H_
