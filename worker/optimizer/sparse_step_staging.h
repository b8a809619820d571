// How the CUDA sparse signed step's arguments are laid out in one buffer: every tensor's
// descriptor, the chunk table and all entries, so that one copy takes them to the device and
// one launch decodes every chunk of every tensor (cuda_updates.cc). Pure host code, no CUDA:
// the tests lay the arguments out in host memory and run the kernel's own bodies on them
// (cuda/kernel_bodies.h).
#ifndef DEMOD_WORKER_OPTIMIZER_SPARSE_STEP_STAGING_H_
#define DEMOD_WORKER_OPTIMIZER_SPARSE_STEP_STAGING_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/chunk_layout.h"
#include "common/sparse_payload.h"
#include "worker/optimizer/cuda/kernel_bodies.h"

namespace demod {

// One tensor to stage: its aggregate and layout (host), and the device pointers of its
// parameter and DCT bases (F_r^T, F_c^T).
struct StagedTensor {
  const AggregateTensor* aggregate = nullptr;
  const ChunkLayout* layout = nullptr;
  float* param = nullptr;
  const float* f_rows_t = nullptr;
  const float* f_cols_t = nullptr;
};

// The bytes StageSparseSignedSteps writes for `tensors`.
size_t SparseSignedStepsBytes(const std::vector<StagedTensor>& tensors);

// Writes the arguments into `host` (SparseSignedStepsBytes bytes, 8-byte aligned) and returns
// them with every pointer into the buffer rebased to `device`, where the buffer will be copied.
cuda::SparseSignedSteps StageSparseSignedSteps(const std::vector<StagedTensor>& tensors,
                                               uint8_t* host, uint8_t* device);

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_SPARSE_STEP_STAGING_H_
