#include "bench/benchmark_gpt.h"

#include <string>

namespace demod {

std::vector<TensorShape> BenchmarkGptShapes() {
  const int64_t d = 256, vocab = 256, context = 256, layers = 6;
  std::vector<TensorShape> s = {{"tok_emb", {vocab, d}}, {"pos_emb", {context, d}}};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    s.push_back({p + "ln1.weight", {d}});
    s.push_back({p + "ln1.bias", {d}});
    s.push_back({p + "attn.qkv.weight", {3 * d, d}});
    s.push_back({p + "attn.qkv.bias", {3 * d}});
    s.push_back({p + "attn.proj.weight", {d, d}});
    s.push_back({p + "attn.proj.bias", {d}});
    s.push_back({p + "ln2.weight", {d}});
    s.push_back({p + "ln2.bias", {d}});
    s.push_back({p + "mlp.fc.weight", {4 * d, d}});
    s.push_back({p + "mlp.fc.bias", {4 * d}});
    s.push_back({p + "mlp.proj.weight", {d, 4 * d}});
    s.push_back({p + "mlp.proj.bias", {d}});
  }
  s.push_back({"ln_f.weight", {d}});
  s.push_back({"ln_f.bias", {d}});
  s.push_back({"head.weight", {vocab, d}});
  return s;
}

}  // namespace demod
