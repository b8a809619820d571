// LibTorch glue for the CUDA kernels (cuda/cuda_kernels.h): DeMo's sparse signed step and the
// dense AdamW update on CUDA parameters, bit-identical to the CPU's (sparse_signed_step.h,
// adamw_update.h). Compiled only in a CUDA build (DEMOD_WITH_CUDA, see CMakeLists.txt), so
// Debian's CPU-only LibTorch build is unchanged.
//
// Work runs on the current CUDA stream of the parameters' device; the calls return once it is
// done, so the host buffers they stage through can be reused. Used from one thread.
#ifndef DEMOD_WORKER_OPTIMIZER_CUDA_UPDATES_H_
#define DEMOD_WORKER_OPTIMIZER_CUDA_UPDATES_H_

#include <ATen/ATen.h>

#include <vector>

#include "absl/status/status.h"
#include "common/chunk_layout.h"
#include "common/sparse_payload.h"
#include "worker/optimizer/rounded_arithmetic.h"

namespace demod {

// Whether the CUDA kernels take this parameter: float32, contiguous, on a CUDA device.
bool TakesCudaUpdate(const at::Tensor& param);

class CudaSignedSteps {
 public:
  struct Tensor {
    const AggregateTensor* aggregate = nullptr;
    const ChunkLayout* layout = nullptr;
    at::Tensor param;  // TakesCudaUpdate
  };

  // param <- param * keep (when decay) + step * sign(decoded aggregate), for every tensor.
  // INTERNAL with CUDA's message when a launch or copy fails.
  absl::Status Apply(const std::vector<Tensor>& tensors, bool decay, float keep, float step);

 private:
  absl::Status ApplyOnDevice(const std::vector<const Tensor*>& tensors, bool decay, float keep,
                             float step);

  at::Tensor staging_;  // pinned host bytes
};

// AdamW on one CUDA parameter (TakesCudaUpdate) with its moments m and v (float32, contiguous,
// on the same device); `gradient` is the mean gradient in the wire's chunk order.
absl::Status ApplyAdamWOnCuda(const std::vector<float>& gradient, const ChunkLayout& layout,
                              const rounded::AdamWScalars& scalars, at::Tensor& param,
                              at::Tensor& m, at::Tensor& v);

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_CUDA_UPDATES_H_
