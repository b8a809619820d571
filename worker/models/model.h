// The model interface the worker's training loop drives, and the factory that builds one of the
// three kinds from a ModelSpec: a byte-level GPT, a small Fashion-MNIST CNN, or a TorchScript
// module whose forward(inputs, targets) returns the loss.
//
// Initialization is a pure function of ModelSpec::seed (drawn with demod's own generator, not
// torch's), so every worker of a run starts from bit-identical parameters, whatever LibTorch
// build or device it runs on.
//
// A Model is used from one thread at a time. LibTorch's c10::Error never escapes: the factory
// and Loss return it as a Status.
#ifndef DEMOD_WORKER_MODELS_MODEL_H_
#define DEMOD_WORKER_MODELS_MODEL_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/optimizer/named_tensor.h"  // a header alone: models do not link the optimizer

namespace demod {

// One step's data, already on the model's device.
struct Batch {
  at::Tensor inputs;   // GPT: Long [B, T] bytes; CNN: float [B, 1, 28, 28]
  at::Tensor targets;  // GPT: Long [B, T] (inputs shifted by one); CNN: Long [B] classes
  int64_t tokens = 0;  // tokens (text) or samples (images) in the batch, for throughput
};

class Model {
 public:
  virtual ~Model();

  // The trainable parameters in a stable order with unique dotted names
  // ("blocks.0.attn.qkv.weight"); the tensors alias the model's own, so the optimizer updates
  // them in place.
  virtual std::vector<NamedTensor> NamedParameters() = 0;

  // The scalar mean loss over the batch, with its autograd graph attached (call backward()
  // on it). INVALID_ARGUMENT when the batch does not fit the model (shape, dtype, range).
  virtual absl::StatusOr<at::Tensor> Loss(const Batch& batch) = 0;

  // Training or evaluation mode (dropout, batch norm) for modules that have one.
  virtual void SetTraining(bool training) = 0;

  // One line for logs: kind, shape, parameter count.
  virtual std::string Describe() const = 0;
};

// The mean of model.Loss over `batch`, computed at most `part` samples at a time, so that a
// large held-out set is evaluated in bounded memory. Each part's mean is weighted by its
// samples: for losses that are means over samples of equal size (every model here) this is the
// mean over the whole batch, to rounding. No autograd graph is kept. INVALID_ARGUMENT for an
// empty batch or part < 1; Loss's errors as they are.
absl::StatusOr<double> MeanLossInParts(Model& model, const Batch& batch, int64_t part);

struct GptConfig {
  static constexpr int64_t kVocab = 256;  // byte-level: one token per byte
  int64_t layers = 4;
  int64_t d_model = 128;
  int64_t heads = 4;      // must divide d_model
  int64_t context = 128;  // longest sequence; the learned positional embedding's size
};

struct ModelSpec {
  std::string kind = "gpt";      // "gpt" | "cnn" | "torchscript"
  GptConfig gpt;                 // kind "gpt"
  std::string torchscript_path;  // kind "torchscript"
  uint64_t seed = 0;             // initialization (ignored for "torchscript")
};

// INVALID_ARGUMENT for an unknown kind or a bad GPT config; NOT_FOUND for a missing
// TorchScript file. The model's parameters are on `device`.
absl::StatusOr<std::unique_ptr<Model>> MakeModel(const ModelSpec& spec, at::Device device);

// The number of elements in `params`, for Describe() and logs.
int64_t CountParameters(const std::vector<NamedTensor>& params);

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_MODEL_H_
