// CUDA kernels for the per-step updates that every device must compute bit for bit like the
// CPU: DeMo's sparse decode with its signed step (sparse_signed_step.h fixes the order of
// operations) and the dense AdamW update (rounded_arithmetic.h). Raw device pointers and
// streams, no LibTorch: cuda_updates.h is the glue. Compiled by nvcc in every build that finds
// it, so the kernels cannot rot on machines without a GPU.
//
// Every pointer below is device memory unless it says otherwise. Launches are asynchronous on
// `stream`; the returned error is the launch's (cudaSuccess when it was queued).
#ifndef DEMOD_WORKER_OPTIMIZER_CUDA_CUDA_KERNELS_H_
#define DEMOD_WORKER_OPTIMIZER_CUDA_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "worker/optimizer/cuda/kernel_bodies.h"

namespace demod {
namespace cuda {

// The scratch a launch needs beyond shared memory: 0 when the largest chunk fits in a block's
// shared memory, else a buffer of this many bytes passed as `scratch`.
size_t SparseSignedStepsScratchBytes(const SparseSignedSteps& steps);

// param <- SignedStep(param, X, decay, keep, step) for every element of every tensor, X the
// decoded aggregate.
cudaError_t LaunchSparseSignedSteps(const SparseSignedSteps& steps, bool decay, float keep,
                                    float step, void* scratch, cudaStream_t stream);

// AdamW on one tensor: `gradient` is the mean gradient in the wire's chunk order (numel
// values); param, m and v are row-major in `geometry`.
cudaError_t LaunchAdamW(const float* gradient, int64_t numel, const ChunkGeometry& geometry,
                        const rounded::AdamWScalars& scalars, float* param, float* m, float* v,
                        cudaStream_t stream);

}  // namespace cuda
}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_CUDA_CUDA_KERNELS_H_
