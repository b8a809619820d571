// A byte-level GPT: token and learned positional embeddings, pre-LayerNorm blocks of causal
// multi-head self-attention and a 4x MLP with GELU, a final LayerNorm and a linear head over
// the 256 byte values. No dropout, no weight tying.
//
// Parameter names and order (the table the optimizer and coordinator see), L = layers:
//   tok_emb.weight [256, d], pos_emb.weight [context, d],
//   blocks.{0..L-1}.{ln1, attn.qkv, attn.proj, ln2, mlp.fc, mlp.proj}.{weight, bias},
//   ln_f.{weight, bias}, head.weight [256, d]
// (the shapes of bench/optimizer_bench.cc's benchmark GPT: 2 + 12 L + 3 tensors).
//
// Initialization (GPT-2's): weights normal(0, 0.02), biases 0, LayerNorm 1 and 0, drawn in
// parameter order from SplitMix64(seed), so it is the same on every worker.
#ifndef DEMOD_WORKER_MODELS_GPT_MODEL_H_
#define DEMOD_WORKER_MODELS_GPT_MODEL_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "worker/models/model.h"

namespace demod {

class GptModel : public Model {
 public:
  // INVALID_ARGUMENT for a non-positive size or heads not dividing d_model.
  static absl::StatusOr<std::unique_ptr<GptModel>> Create(const GptConfig& config, uint64_t seed,
                                                          at::Device device);
  ~GptModel() override;

  std::vector<NamedTensor> NamedParameters() override;
  // Mean next-byte cross-entropy. inputs and targets: Long [B, T], 1 <= T <= context,
  // values in [0, 256).
  absl::StatusOr<at::Tensor> Loss(const Batch& batch) override;
  void SetTraining(bool training) override;
  std::string Describe() const override;

  // The next-byte logits [B, T, 256] for Long inputs [B, T] (for tests and evaluation).
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& inputs);

  const GptConfig& config() const { return config_; }

 private:
  class Net;  // the torch::nn module tree, kept out of this header (torch/nn.h is heavy)

  GptModel(const GptConfig& config, std::shared_ptr<Net> net);
  absl::Status CheckTokens(const at::Tensor& tokens, const char* what) const;

  GptConfig config_;
  std::shared_ptr<Net> net_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_GPT_MODEL_H_
