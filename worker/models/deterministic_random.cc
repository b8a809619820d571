#include "worker/models/deterministic_random.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <vector>

namespace demod {
namespace {

template <typename Draw>
void Fill(const at::Tensor& tensor, Draw draw) {
  std::vector<float> values(static_cast<size_t>(tensor.numel()));
  for (float& v : values) v = static_cast<float>(draw());
  at::Tensor cpu = at::from_blob(values.data(), tensor.sizes(), at::kFloat);
  at::NoGradGuard no_grad;
  tensor.copy_(cpu);  // converts dtype and moves to the tensor's device
}

}  // namespace

uint64_t SplitMix64::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int64_t SplitMix64::Below(int64_t n) { return static_cast<int64_t>(Next() % uint64_t(n)); }

double SplitMix64::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

double SplitMix64::Normal() {
  constexpr double kTwoPi = 6.283185307179586;
  const double u1 = 1.0 - Uniform();  // (0, 1]: log stays finite
  const double u2 = Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

uint64_t MixSeed(uint64_t seed, uint64_t stream) {
  SplitMix64 a(seed);
  SplitMix64 b(a.Next() ^ stream);
  return b.Next();
}

void FillNormal(const at::Tensor& tensor, double std, SplitMix64& rng) {
  Fill(tensor, [&] { return std * rng.Normal(); });
}

void FillUniform(const at::Tensor& tensor, double bound, SplitMix64& rng) {
  Fill(tensor, [&] { return bound * (2.0 * rng.Uniform() - 1.0); });
}

}  // namespace demod
