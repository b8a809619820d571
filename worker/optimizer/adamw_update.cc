#include "worker/optimizer/adamw_update.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "worker/optimizer/chunk_addressing.h"
#include "worker/optimizer/cpu_kernels.h"

namespace demod {
namespace {

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void AdamWRow(
    const float* gradient, int64_t n, const rounded::AdamWScalars& s, float* param, float* m,
    float* v) {
  for (int64_t c = 0; c < n; ++c) rounded::AdamWElement(gradient[c], s, m[c], v[c], param[c]);
}

}  // namespace

rounded::AdamWScalars AdamWScalarsFor(double lr, double beta1, double beta2, double eps,
                                      double weight_decay, int64_t step) {
  rounded::AdamWScalars s;
  s.beta1 = static_cast<float>(beta1);
  s.one_minus_beta1 = static_cast<float>(1 - beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1 - beta2);
  s.bias_correction1 = static_cast<float>(1 - std::pow(beta1, static_cast<double>(step)));
  s.bias_correction2 = static_cast<float>(1 - std::pow(beta2, static_cast<double>(step)));
  s.eps = static_cast<float>(eps);
  s.lr = static_cast<float>(lr);
  s.decay = weight_decay != 0;
  s.keep = static_cast<float>(1 - lr * weight_decay);
  return s;
}

namespace cpu {

void ApplyAdamW(const float* gradient, const ChunkLayout& layout,
                const rounded::AdamWScalars& scalars, float* param, float* m, float* v) {
  const ChunkGeometry g = GeometryOf(layout);
  const int64_t size = layout.chunk_size();
  at::parallel_for(0, layout.num_chunks(), ChunksPerTask(layout), [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t origin = ChunkOrigin(g, chunk);
      for (int64_t r = 0; r < g.chunk_rows; ++r) {
        const int64_t at = origin + r * g.cols;
        AdamWRow(gradient + chunk * size + r * g.chunk_cols, g.chunk_cols, scalars, param + at,
                 m + at, v + at);
      }
    }
  });
}

}  // namespace cpu
}  // namespace demod
