// Settings of the DeMo optimizer, as a chained builder in the style of
// torch::optim::AdamWOptions:
//
//   DemoOptions(4e-4).compression_topk(32).value_encoding(ValueEncoding::kBFloat16)
//
// Defaults are the paper's (chunk 64, topk 32, decay 0.999, weight decay 0).
#ifndef DEMOD_WORKER_OPTIMIZER_DEMO_OPTIONS_H_
#define DEMOD_WORKER_OPTIMIZER_DEMO_OPTIONS_H_

#include <torch/arg.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/value_encoding.h"

namespace demod {

struct DemoOptions {
  explicit DemoOptions(double lr = 1e-3) : lr_(lr) {}

  TORCH_ARG(double, lr);
  TORCH_ARG(double, compression_decay) = 0.999;
  TORCH_ARG(int64_t, compression_topk) = 32;
  TORCH_ARG(int64_t, compression_chunk) = 64;
  TORCH_ARG(double, weight_decay) = 0.0;
  TORCH_ARG(ValueEncoding, value_encoding) = ValueEncoding::kFloat32;
  // In a CUDA build, float32 CUDA parameters take steps 9-10 on their device (cuda_updates.h);
  // false decodes on the CPU and copies the signs over, as CPU-only builds do. The same bits
  // either way.
  TORCH_ARG(bool, device_updates) = true;

 public:
  // INVALID_ARGUMENT naming the first setting out of range.
  absl::Status Validate() const;
};

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_DEMO_OPTIONS_H_
