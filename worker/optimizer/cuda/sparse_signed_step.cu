// DeMo's sparse decode and signed step on the GPU, one block per chunk (grid-strided), in the
// order sparse_signed_step.h fixes:
//   1. flag the chunk's columns that hold an entry and list them ascending;
//   2. y[r, j] = sum over the entries of column j, in entry order, of v * F_r[r, i]: thread r
//      walks the entries once (the sums of one row never race);
//   3. X[r, c] = sum over the listed columns of y[r, j] * F_c[c, j], then the signed step.
#include <algorithm>

#include "worker/optimizer/cuda/cuda_kernels.h"

namespace demod {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// Dynamic shared memory a block may use without opting in (48 KiB, less the static part).
constexpr size_t kSharedLimit = 40 * 1024;

// Floats of per-block scratch: y (a x b) then two int arrays of b (the column list, flags).
__host__ __device__ int64_t ScratchFloats(const SparseSignedSteps& s) {
  return s.max_chunk_size + 2 * s.max_chunk_cols;
}

__global__ void SparseSignedStepsKernel(SparseSignedSteps s, bool decay, float keep, float step,
                                        float* global_scratch) {
  extern __shared__ float shared_scratch[];
  __shared__ int n_used;
  float* y =
      global_scratch == nullptr ? shared_scratch : global_scratch + blockIdx.x * ScratchFloats(s);
  int* used = reinterpret_cast<int*>(y + s.max_chunk_size);
  int* flag = used + s.max_chunk_cols;
  for (int64_t chunk = blockIdx.x; chunk < s.total_chunks; chunk += gridDim.x) {
    const SignedStepTensor& t = s.tensors[s.chunk_tensor[chunk]];
    const ChunkGeometry& g = t.geometry;
    const int64_t a = g.chunk_rows;
    const int64_t b = g.chunk_cols;
    const uint64_t first = s.chunk_offsets[chunk];
    const uint64_t last = s.chunk_offsets[chunk + 1];
    for (int64_t j = threadIdx.x; j < b; j += blockDim.x) flag[j] = 0;
    __syncthreads();
    for (uint64_t e = first + threadIdx.x; e < last; e += blockDim.x) flag[s.indices[e] % b] = 1;
    __syncthreads();
    if (threadIdx.x == 0) {
      int count = 0;
      for (int64_t j = 0; j < b; ++j) {
        if (flag[j]) used[count++] = static_cast<int>(j);
      }
      n_used = count;
    }
    __syncthreads();
    const int cols_used = n_used;
    for (int64_t q = threadIdx.x; q < a * cols_used; q += blockDim.x) {
      y[(q / cols_used) * b + used[q % cols_used]] = 0.0f;
    }
    __syncthreads();
    for (int64_t r = threadIdx.x; r < a; r += blockDim.x) {
      float* y_row = y + r * b;
      for (uint64_t e = first; e < last; ++e) {
        const uint32_t index = s.indices[e];
        const int64_t i = index / b;
        const int64_t j = index % b;
        y_row[j] = rounded::Add(y_row[j], rounded::Mul(s.values[e], t.f_rows_t[i * a + r]));
      }
    }
    __syncthreads();
    float* origin = t.param + ChunkOrigin(g, s.chunk_in_tensor[chunk]);
    for (int64_t q = threadIdx.x; q < a * b; q += blockDim.x) {
      const int64_t r = q / b;
      const int64_t c = q - r * b;
      float x = 0.0f;
      for (int u = 0; u < cols_used; ++u) {
        const int j = used[u];
        x = rounded::Add(x, rounded::Mul(y[r * b + j], t.f_cols_t[j * b + c]));
      }
      float& p = origin[r * g.cols + c];
      p = rounded::SignedStep(p, x, decay, keep, step);
    }
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
  const size_t per_block = ScratchFloats(steps) * sizeof(float);
  if (per_block <= kSharedLimit) return 0;
  return per_block * GridSize(std::max<int64_t>(1, steps.total_chunks));
}

cudaError_t LaunchSparseSignedSteps(const SparseSignedSteps& steps, bool decay, float keep,
                                    float step, void* scratch, cudaStream_t stream) {
  if (steps.total_chunks == 0) return cudaSuccess;
  const size_t per_block = ScratchFloats(steps) * sizeof(float);
  const bool in_shared = per_block <= kSharedLimit;
  if (!in_shared && scratch == nullptr) return cudaErrorInvalidValue;
  SparseSignedStepsKernel<<<GridSize(steps.total_chunks), kThreads, in_shared ? per_block : 0,
                            stream>>>(steps, decay, keep, step,
                                      in_shared ? nullptr : static_cast<float*>(scratch));
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace demod
