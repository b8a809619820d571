// DeMo's sparse decode and signed step on the GPU, one block per chunk (grid-strided), in the
// order sparse_signed_step.h fixes: the phases of kernel_bodies.h with a barrier after each.
#include <algorithm>

#include "worker/optimizer/cuda/cuda_kernels.h"

namespace demod {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// Dynamic shared memory a block may use without opting in (48 KiB, less the static part).
constexpr size_t kSharedLimit = 40 * 1024;

__global__ void SparseSignedStepsKernel(SparseSignedSteps s, bool decay, float keep, float step,
                                        float* global_scratch) {
  extern __shared__ float shared_scratch[];
  __shared__ int n_used;
  float* scratch = global_scratch == nullptr
                       ? shared_scratch
                       : global_scratch + blockIdx.x * ChunkScratchFloats(s);
  const int thread = threadIdx.x, threads = blockDim.x;
  for (int64_t chunk = blockIdx.x; chunk < s.total_chunks; chunk += gridDim.x) {
    ChunkWork w = WorkOn(s, chunk, scratch);
    w.scratch.n_used = &n_used;
    ClearFlags(w, thread, threads);
    __syncthreads();
    FlagColumns(s, w, thread, threads);
    __syncthreads();
    if (thread == 0) ListColumns(w);
    __syncthreads();
    const int cols_used = n_used;
    ClearY(w, cols_used, thread, threads);
    __syncthreads();
    AccumulateY(s, w, thread, threads);
    __syncthreads();
    StepElements(w, cols_used, decay, keep, step, thread, threads);
    __syncthreads();  // the next chunk reuses the scratch
  }
}

int GridSize(int64_t total_chunks) {
  int device = 0;
  int sms = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return static_cast<int>(std::min<int64_t>(total_chunks, static_cast<int64_t>(sms) * 8));
}

}  // namespace

size_t SparseSignedStepsScratchBytes(const SparseSignedSteps& steps) {
  const size_t per_block = ChunkScratchFloats(steps) * sizeof(float);
  if (per_block <= kSharedLimit) return 0;
  return per_block * GridSize(std::max<int64_t>(1, steps.total_chunks));
}

cudaError_t LaunchSparseSignedSteps(const SparseSignedSteps& steps, bool decay, float keep,
                                    float step, void* scratch, cudaStream_t stream) {
  if (steps.total_chunks == 0) return cudaSuccess;
  const size_t per_block = ChunkScratchFloats(steps) * sizeof(float);
  const bool in_shared = per_block <= kSharedLimit;
  if (!in_shared && scratch == nullptr) return cudaErrorInvalidValue;
  SparseSignedStepsKernel<<<GridSize(steps.total_chunks), kThreads, in_shared ? per_block : 0,
                            stream>>>(steps, decay, keep, step,
                                      in_shared ? nullptr : static_cast<float*>(scratch));
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace demod
