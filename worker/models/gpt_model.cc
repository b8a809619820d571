#include "worker/models/gpt_model.h"

#include <torch/nn.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/models/deterministic_random.h"

namespace demod {
namespace {

class Attention : public torch::nn::Module {
 public:
  Attention(int64_t d_model, int64_t heads)
      : heads_(heads),
        qkv_(register_module("qkv", torch::nn::Linear(d_model, 3 * d_model))),
        proj_(register_module("proj", torch::nn::Linear(d_model, d_model))) {}

  at::Tensor forward(const at::Tensor& x) {
    const int64_t b = x.size(0), t = x.size(1), d = x.size(2), hd = d / heads_;
    std::vector<at::Tensor> qkv = qkv_->forward(x).split(d, /*dim=*/2);
    // [B, T, d] -> [B, heads, T, hd]
    auto heads = [&](const at::Tensor& z) { return z.view({b, t, heads_, hd}).transpose(1, 2); };
    const at::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
    at::Tensor att = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(hd)));
    // Position i may attend to positions <= i only: what lies ahead is the target.
    const at::Tensor future =
        at::ones({t, t}, at::TensorOptions().dtype(at::kBool).device(x.device())).triu(1);
    att = att.masked_fill(future, -std::numeric_limits<float>::infinity()).softmax(-1);
    return proj_->forward(at::matmul(att, v).transpose(1, 2).reshape({b, t, d}));
  }

 private:
  int64_t heads_;
  torch::nn::Linear qkv_, proj_;
};

class Mlp : public torch::nn::Module {
 public:
  explicit Mlp(int64_t d_model)
      : fc_(register_module("fc", torch::nn::Linear(d_model, 4 * d_model))),
        proj_(register_module("proj", torch::nn::Linear(4 * d_model, d_model))) {}

  at::Tensor forward(const at::Tensor& x) { return proj_->forward(at::gelu(fc_->forward(x))); }

 private:
  torch::nn::Linear fc_, proj_;
};

torch::nn::LayerNorm MakeLayerNorm(int64_t d_model) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model}));
}

class Block : public torch::nn::Module {
 public:
  Block(int64_t d_model, int64_t heads)
      : ln1_(register_module("ln1", MakeLayerNorm(d_model))),
        attn_(register_module("attn", std::make_shared<Attention>(d_model, heads))),
        ln2_(register_module("ln2", MakeLayerNorm(d_model))),
        mlp_(register_module("mlp", std::make_shared<Mlp>(d_model))) {}

  at::Tensor forward(at::Tensor x) {
    x = x + attn_->forward(ln1_->forward(x));
    return x + mlp_->forward(ln2_->forward(x));
  }

 private:
  torch::nn::LayerNorm ln1_;
  std::shared_ptr<Attention> attn_;
  torch::nn::LayerNorm ln2_;
  std::shared_ptr<Mlp> mlp_;
};

absl::Status TorchError(absl::string_view what, const c10::Error& e) {
  return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
}

}  // namespace

class GptModel::Net : public torch::nn::Module {
 public:
  explicit Net(const GptConfig& c)
      : tok_emb_(register_module("tok_emb", torch::nn::Embedding(GptConfig::kVocab, c.d_model))),
        pos_emb_(register_module("pos_emb", torch::nn::Embedding(c.context, c.d_model))),
        blocks_(register_module("blocks", torch::nn::ModuleList())),
        ln_f_(register_module("ln_f", MakeLayerNorm(c.d_model))),
        head_(register_module(
            "head", torch::nn::Linear(
                        torch::nn::LinearOptions(c.d_model, GptConfig::kVocab).bias(false)))) {
    for (int64_t l = 0; l < c.layers; ++l) {
      blocks_->push_back(std::make_shared<Block>(c.d_model, c.heads));
    }
  }

  at::Tensor forward(const at::Tensor& tokens) {
    const at::Tensor positions = at::arange(tokens.size(1), tokens.options());
    at::Tensor x = tok_emb_->forward(tokens) + pos_emb_->forward(positions);
    for (const std::shared_ptr<torch::nn::Module>& block : *blocks_) {
      x = block->as<Block>()->forward(x);
    }
    return head_->forward(ln_f_->forward(x));
  }

 private:
  torch::nn::Embedding tok_emb_, pos_emb_;
  torch::nn::ModuleList blocks_;
  torch::nn::LayerNorm ln_f_;
  torch::nn::Linear head_;
};

absl::StatusOr<std::unique_ptr<GptModel>> GptModel::Create(const GptConfig& config, uint64_t seed,
                                                           at::Device device) {
  if (config.layers < 1 || config.d_model < 1 || config.heads < 1 || config.context < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpt: layers, d_model, heads and context must be >= 1, got ", config.layers,
                     ", ", config.d_model, ", ", config.heads, ", ", config.context));
  }
  if (config.d_model % config.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpt: heads (", config.heads, ") must divide d_model (", config.d_model, ")"));
  }
  try {
    auto net = std::make_shared<Net>(config);
    // Drawn on the CPU in parameter order, then moved: the same numbers on every device.
    SplitMix64 rng(seed);
    for (const auto& p : net->named_parameters()) {
      if (p.value().dim() >= 2) {
        FillNormal(p.value(), 0.02, rng);
      } else if (absl::EndsWith(p.key(), ".bias")) {
        p.value().detach().zero_();
      } else {  // LayerNorm gain
        p.value().detach().fill_(1.0);
      }
    }
    net->to(device);
    return std::unique_ptr<GptModel>(new GptModel(config, std::move(net)));
  } catch (const c10::Error& e) {
    return TorchError("gpt: building the model", e);
  }
}

GptModel::GptModel(const GptConfig& config, std::shared_ptr<Net> net)
    : config_(config), net_(std::move(net)) {}

GptModel::~GptModel() = default;

std::vector<NamedTensor> GptModel::NamedParameters() {
  std::vector<NamedTensor> out;
  for (const auto& p : net_->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

absl::Status GptModel::CheckTokens(const at::Tensor& tokens, const char* what) const {
  if (!tokens.defined() || tokens.dim() != 2 || tokens.scalar_type() != at::kLong) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpt: ", what, " must be a Long tensor [batch, time], got ",
                     tokens.defined() ? c10::toString(tokens.scalar_type()) : "undefined",
                     " of shape ", tokens.defined() ? c10::str(tokens.sizes()) : "[]"));
  }
  if (tokens.size(1) < 1 || tokens.size(1) > config_.context) {
    return absl::InvalidArgumentError(absl::StrCat("gpt: ", what, " have ", tokens.size(1),
                                                   " positions; the context is 1 to ",
                                                   config_.context));
  }
  if (tokens.numel() > 0) {
    const auto [lo, hi] = at::aminmax(tokens);
    const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
    if (min < 0 || max >= GptConfig::kVocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpt: ", what, " must be bytes in [0, 256), got [", min, ", ", max, "]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> GptModel::Logits(const at::Tensor& inputs) {
  DEMOD_RETURN_IF_ERROR(CheckTokens(inputs, "inputs"));
  try {
    return net_->forward(inputs);
  } catch (const c10::Error& e) {
    return TorchError("gpt: forward", e);
  }
}

absl::StatusOr<at::Tensor> GptModel::Loss(const Batch& batch) {
  DEMOD_RETURN_IF_ERROR(CheckTokens(batch.targets, "targets"));
  if (batch.inputs.defined() && batch.inputs.sizes() != batch.targets.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("gpt: inputs ", c10::str(batch.inputs.sizes()),
                                                   " and targets ", c10::str(batch.targets.sizes()),
                                                   " differ in shape"));
  }
  DEMOD_ASSIGN_OR_RETURN(at::Tensor logits, Logits(batch.inputs));
  try {
    return at::cross_entropy_loss(logits.reshape({-1, GptConfig::kVocab}),
                                  batch.targets.reshape({-1}));
  } catch (const c10::Error& e) {
    return TorchError("gpt: loss", e);
  }
}

void GptModel::SetTraining(bool training) { net_->train(training); }

std::string GptModel::Describe() const {
  std::vector<NamedTensor> params;
  for (const auto& p : net_->named_parameters()) params.emplace_back(p.key(), p.value());
  return absl::StrCat("gpt: ", config_.layers, " layers, d_model ", config_.d_model, ", ",
                      config_.heads, " heads, context ", config_.context, ", vocab ",
                      GptConfig::kVocab, ", ", CountParameters(params), " parameters");
}

}  // namespace demod
