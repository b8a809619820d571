// The dense AdamW update on the CPU, element by element in the order rounded_arithmetic.h fixes,
// so CPU and CUDA workers (cuda/cuda_kernels.h) compute the same bits, whatever the thread
// count or the CPU's instruction set. ATen's operators do not promise that: their vectorized
// loops fuse products into sums where the scalar tails do not.
#ifndef DEMOD_WORKER_OPTIMIZER_ADAMW_UPDATE_H_
#define DEMOD_WORKER_OPTIMIZER_ADAMW_UPDATE_H_

#include <cstdint>

#include "common/chunk_layout.h"
#include "worker/optimizer/rounded_arithmetic.h"

namespace demod {

// The scalars of AdamW's step `step` (>= 1); weight_decay 0 skips the decay.
rounded::AdamWScalars AdamWScalarsFor(double lr, double beta1, double beta2, double eps,
                                      double weight_decay, int64_t step);

namespace cpu {

// AdamW on one tensor: `gradient` is the mean gradient in the wire's chunk order
// (layout.num_elements() values); param, m and v are row-major in layout.matrix_shape.
void ApplyAdamW(const float* gradient, const ChunkLayout& layout,
                const rounded::AdamWScalars& scalars, float* param, float* m, float* v);

}  // namespace cpu
}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_ADAMW_UPDATE_H_
