#include "worker/models/cnn_model.h"

#include <torch/nn.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/models/deterministic_random.h"

namespace demod {
namespace {

torch::nn::Conv2d Conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

absl::Status TorchError(absl::string_view what, const c10::Error& e) {
  return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
}

}  // namespace

class CnnModel::Net : public torch::nn::Module {
 public:
  Net()
      : conv1_(register_module("conv1", Conv3x3(1, 16))),
        conv2_(register_module("conv2", Conv3x3(16, 32))),
        fc1_(register_module("fc1", torch::nn::Linear(32 * 7 * 7, 128))),
        fc2_(register_module("fc2", torch::nn::Linear(128, kClasses))) {}

  at::Tensor forward(const at::Tensor& images) {
    at::Tensor x = at::max_pool2d(at::relu(conv1_->forward(images)), 2);
    x = at::max_pool2d(at::relu(conv2_->forward(x)), 2);
    return fc2_->forward(at::relu(fc1_->forward(x.flatten(1))));
  }

 private:
  torch::nn::Conv2d conv1_, conv2_;
  torch::nn::Linear fc1_, fc2_;
};

absl::StatusOr<std::unique_ptr<CnnModel>> CnnModel::Create(uint64_t seed, at::Device device) {
  try {
    auto net = std::make_shared<Net>();
    // A bias shares its layer's fan-in, which is its weight's (registered just before it).
    SplitMix64 rng(seed);
    double bound = 1.0;
    for (const auto& p : net->named_parameters()) {
      const at::Tensor& t = p.value();
      if (t.dim() >= 2) bound = 1.0 / std::sqrt(double(t.numel() / t.size(0)));
      FillUniform(t, bound, rng);
    }
    net->to(device);
    return std::unique_ptr<CnnModel>(new CnnModel(std::move(net)));
  } catch (const c10::Error& e) {
    return TorchError("cnn: building the model", e);
  }
}

CnnModel::CnnModel(std::shared_ptr<Net> net) : net_(std::move(net)) {}

CnnModel::~CnnModel() = default;

std::vector<NamedTensor> CnnModel::NamedParameters() {
  std::vector<NamedTensor> out;
  for (const auto& p : net_->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

absl::StatusOr<at::Tensor> CnnModel::Logits(const at::Tensor& inputs) {
  if (!inputs.defined() || inputs.dim() != 4 || inputs.size(1) != 1 ||
      inputs.size(2) != kImageSide || inputs.size(3) != kImageSide ||
      !at::isFloatingType(inputs.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cnn: inputs must be a floating tensor [batch, 1, 28, 28], got ",
        inputs.defined() ? c10::str(c10::toString(inputs.scalar_type()), " ", inputs.sizes())
                         : "undefined"));
  }
  try {
    return net_->forward(inputs);
  } catch (const c10::Error& e) {
    return TorchError("cnn: forward", e);
  }
}

absl::StatusOr<at::Tensor> CnnModel::Loss(const Batch& batch) {
  const at::Tensor& targets = batch.targets;
  if (!targets.defined() || targets.dim() != 1 || targets.scalar_type() != at::kLong ||
      !batch.inputs.defined() || targets.size(0) != batch.inputs.size(0)) {
    return absl::InvalidArgumentError(
        "cnn: targets must be a Long tensor [batch] matching the inputs' batch");
  }
  DEMOD_ASSIGN_OR_RETURN(at::Tensor logits, Logits(batch.inputs));
  if (targets.numel() > 0) {
    const auto [lo, hi] = at::aminmax(targets);
    if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= kClasses) {
      return absl::InvalidArgumentError(absl::StrCat("cnn: targets must be classes in [0, ",
                                                     kClasses, "), got [", lo.item<int64_t>(), ", ",
                                                     hi.item<int64_t>(), "]"));
    }
  }
  try {
    return at::cross_entropy_loss(logits, targets);
  } catch (const c10::Error& e) {
    return TorchError("cnn: loss", e);
  }
}

void CnnModel::SetTraining(bool training) { net_->train(training); }

std::string CnnModel::Describe() const {
  std::vector<NamedTensor> params;
  for (const auto& p : net_->named_parameters()) params.emplace_back(p.key(), p.value());
  return absl::StrCat("cnn: 2 conv + 2 linear for 28x28 images in ", kClasses, " classes, ",
                      CountParameters(params), " parameters");
}

}  // namespace demod
