// The dense AdamW update on the GPU: one thread per element, the gradient read in the wire's
// chunk order and the element found with ChunkOrderToOffset, each element computed by
// rounded::AdamWElement as the CPU computes it.
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
    const int64_t at = ChunkOrderToOffset(geometry, position);
    rounded::AdamWElement(gradient[position], scalars, m[at], v[at], param[at]);
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
