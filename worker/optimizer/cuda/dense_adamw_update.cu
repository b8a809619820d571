// The dense AdamW update on the GPU: one thread per element of the gradient's chunk order
// (kernel_bodies.h's AdamWAt), each computed by rounded::AdamWElement as the CPU computes it.
#include <algorithm>

#include "worker/optimizer/cuda/cuda_kernels.h"

namespace demod {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void AdamWKernel(const float* gradient, int64_t numel, ChunkGeometry geometry,
                            rounded::AdamWScalars scalars, float* param, float* m, float* v) {
  for (int64_t position = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       position < numel; position += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    AdamWAt(position, gradient, geometry, scalars, param, m, v);
  }
}

}  // namespace

cudaError_t LaunchAdamW(const float* gradient, int64_t numel, const ChunkGeometry& geometry,
                        const rounded::AdamWScalars& scalars, float* param, float* m, float* v,
                        cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, 65535);
  AdamWKernel<<<static_cast<int>(blocks), kThreads, 0, stream>>>(gradient, numel, geometry, scalars,
                                                                 param, m, v);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace demod
