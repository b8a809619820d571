// A small CNN for 28x28 grey images in 10 classes (Fashion-MNIST), trained with cross-entropy:
//   conv1 3x3 1->16, ReLU, max-pool 2; conv2 3x3 16->32, ReLU, max-pool 2;
//   fc1 1568->128, ReLU; fc2 128->10.
// Parameters: conv1, conv2, fc1, fc2 .{weight, bias} (206,922 in all).
//
// Initialization: PyTorch's default range (uniform in +-1/sqrt(fan_in) for weights and biases),
// drawn in parameter order from SplitMix64(seed), so it is the same on every worker.
#ifndef DEMOD_WORKER_MODELS_CNN_MODEL_H_
#define DEMOD_WORKER_MODELS_CNN_MODEL_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "worker/models/model.h"

namespace demod {

class CnnModel : public Model {
 public:
  static constexpr int64_t kClasses = 10;
  static constexpr int64_t kImageSide = 28;

  static absl::StatusOr<std::unique_ptr<CnnModel>> Create(uint64_t seed, at::Device device);
  ~CnnModel() override;

  std::vector<NamedTensor> NamedParameters() override;
  // inputs: float [B, 1, 28, 28]; targets: Long [B] in [0, 10).
  absl::StatusOr<at::Tensor> Loss(const Batch& batch) override;
  void SetTraining(bool training) override;
  std::string Describe() const override;

  // Class logits [B, 10] for float inputs [B, 1, 28, 28].
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& inputs);

 private:
  class Net;  // the torch::nn module tree, kept out of this header (torch/nn.h is heavy)

  explicit CnnModel(std::shared_ptr<Net> net);

  std::shared_ptr<Net> net_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_CNN_MODEL_H_
