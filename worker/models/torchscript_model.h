// A model brought as a TorchScript file (torch.jit.script(m).save(path) in Python, or
// torch::jit::Module::save in C++) whose forward(inputs, targets) returns the scalar loss.
// Its parameters are the module's parameters that require gradients, named as
// named_parameters() names them, in that order; initialization is whatever the file holds.
//
// Loading checks the file and forward's signature (self plus exactly two arguments, one
// Tensor result), so a wrong file fails at start rather than at the first step.
#ifndef DEMOD_WORKER_MODELS_TORCHSCRIPT_MODEL_H_
#define DEMOD_WORKER_MODELS_TORCHSCRIPT_MODEL_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/models/model.h"

namespace demod {

// NOT_FOUND when `path` does not exist; INVALID_ARGUMENT when it is not a TorchScript archive
// or forward's signature is not forward(inputs, targets) -> Tensor.
absl::StatusOr<std::unique_ptr<Model>> LoadTorchScriptModel(const std::string& path,
                                                            at::Device device);

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_TORCHSCRIPT_MODEL_H_
