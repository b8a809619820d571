#include "worker/models/model.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/models/cnn_model.h"
#include "worker/models/gpt_model.h"
#include "worker/models/torchscript_model.h"

namespace demod {

Model::~Model() = default;

absl::StatusOr<double> MeanLossInParts(Model& model, const Batch& batch, int64_t part) {
  const int64_t samples = batch.inputs.defined() ? batch.inputs.size(0) : 0;
  if (samples < 1 || part < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a mean loss needs samples and parts of at least one: ", samples,
                     " samples in parts of ", part));
  }
  at::NoGradGuard no_grad;
  double sum = 0;
  for (int64_t begin = 0; begin < samples; begin += part) {
    const int64_t count = std::min(part, samples - begin);
    Batch slice{batch.inputs.narrow(0, begin, count), batch.targets.narrow(0, begin, count),
                batch.tokens * count / samples};
    DEMOD_ASSIGN_OR_RETURN(at::Tensor loss, model.Loss(slice));
    sum += loss.item<double>() * static_cast<double>(count);
  }
  return sum / static_cast<double>(samples);
}

absl::StatusOr<std::unique_ptr<Model>> MakeModel(const ModelSpec& spec, at::Device device) {
  if (spec.kind == "gpt") {
    absl::StatusOr<std::unique_ptr<GptModel>> gpt = GptModel::Create(spec.gpt, spec.seed, device);
    if (!gpt.ok()) return gpt.status();
    return std::unique_ptr<Model>(std::move(*gpt));
  }
  if (spec.kind == "cnn") {
    absl::StatusOr<std::unique_ptr<CnnModel>> cnn = CnnModel::Create(spec.seed, device);
    if (!cnn.ok()) return cnn.status();
    return std::unique_ptr<Model>(std::move(*cnn));
  }
  if (spec.kind == "torchscript") {
    if (spec.torchscript_path.empty()) {
      return absl::InvalidArgumentError("model kind torchscript needs a file path");
    }
    return LoadTorchScriptModel(spec.torchscript_path, device);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model kind '", spec.kind, "' (expected gpt, cnn or torchscript)"));
}

int64_t CountParameters(const std::vector<NamedTensor>& params) {
  int64_t n = 0;
  for (const NamedTensor& p : params) n += p.second.numel();
  return n;
}

}  // namespace demod
