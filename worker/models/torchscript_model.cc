#include "worker/models/torchscript_model.h"

#include <torch/script.h>

#include <exception>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace demod {
namespace {

class TorchScriptModel : public Model {
 public:
  TorchScriptModel(std::string path, torch::jit::Module module)
      : path_(std::move(path)), module_(std::move(module)) {}

  std::vector<NamedTensor> NamedParameters() override {
    std::vector<NamedTensor> out;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      if (p.value.requires_grad()) out.emplace_back(p.name, p.value);
    }
    return out;
  }

  absl::StatusOr<at::Tensor> Loss(const Batch& batch) override {
    try {
      c10::IValue out = module_.forward({batch.inputs, batch.targets});
      if (!out.isTensor() || out.toTensor().numel() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("torchscript ", path_, ": forward must return a scalar loss tensor, got ",
                         out.isTensor() ? c10::str(out.toTensor().sizes()) : out.tagKind()));
      }
      return out.toTensor().reshape({});
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("torchscript ", path_, ": forward: ", e.what_without_backtrace()));
    } catch (const std::exception& e) {
      // The interpreter rethrows errors inside the scripted code as torch::jit::JITException,
      // a std::runtime_error rather than a c10::Error.
      return absl::InvalidArgumentError(
          absl::StrCat("torchscript ", path_, ": forward: ", e.what()));
    }
  }

  void SetTraining(bool training) override { module_.train(training); }

  std::string Describe() const override {
    std::vector<NamedTensor> params;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      if (p.value.requires_grad()) params.emplace_back(p.name, p.value);
    }
    return absl::StrCat("torchscript ", path_, ": ", params.size(), " trainable tensors, ",
                        CountParameters(params), " parameters");
  }

 private:
  std::string path_;
  torch::jit::Module module_;
};

absl::Status CheckForward(const std::string& path, const torch::jit::Module& module) {
  const auto forward = module.find_method("forward");  // c10::optional in LibTorch 1.13
  if (!forward.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("torchscript ", path, ": the module has no forward method"));
  }
  const c10::FunctionSchema& schema = forward->function().getSchema();
  // The arguments include self.
  const bool arguments_ok = schema.arguments().size() == 3;
  const bool returns_ok = schema.returns().size() == 1 &&
                          schema.returns()[0].type()->isSubtypeOf(*c10::TensorType::get());
  if (!arguments_ok || !returns_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("torchscript ", path, ": forward must be forward(self, inputs, targets) -> ",
                     "Tensor (the loss), got ", c10::str(schema)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadTorchScriptModel(const std::string& path,
                                                            at::Device device) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("torchscript: no such file: ", path));
  }
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("torchscript ", path,
                     ": not a loadable TorchScript archive: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {  // deserialization may throw other std::exceptions
    return absl::InvalidArgumentError(
        absl::StrCat("torchscript ", path, ": not a loadable TorchScript archive: ", e.what()));
  }
  absl::Status forward_ok = CheckForward(path, module);
  if (!forward_ok.ok()) return forward_ok;
  return std::unique_ptr<Model>(new TorchScriptModel(path, std::move(module)));
}

}  // namespace demod
