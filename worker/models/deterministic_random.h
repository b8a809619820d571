// Seeded randomness that is identical on every platform, compiler, device and LibTorch version.
//
// Workers of one run may use different LibTorch builds (Debian's CPU 1.13 beside an upstream
// CUDA 2.x) whose generators are not promised to agree, yet they must initialize identical
// parameters and draw reproducible batches. So initialization and sampling use SplitMix64
// (Steele, Lea, Flood 2014) here, and only copy the numbers into tensors.
//
// Plain value; thread-compatible.
#ifndef DEMOD_WORKER_MODELS_DETERMINISTIC_RANDOM_H_
#define DEMOD_WORKER_MODELS_DETERMINISTIC_RANDOM_H_

#include <ATen/ATen.h>

#include <cstdint>

namespace demod {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t Next();
  // Uniform in [0, n) for n > 0. By modulo: the bias is below n / 2^64, far under anything a
  // sampler of training windows can notice.
  int64_t Below(int64_t n);
  double Uniform();  // [0, 1), 53 random bits
  // Standard normal by Box-Muller. It calls libm's log and cos, which glibc computes to within
  // an ulp everywhere; rounded to float the draws agree.
  double Normal();

 private:
  uint64_t state_;
};

// A seed for an independent stream derived from `seed` and a stream id (a rank, a step).
uint64_t MixSeed(uint64_t seed, uint64_t stream);

// Overwrite a floating tensor on any device, without recording autograd history, with draws
// from `rng` in row-major order.
void FillNormal(const at::Tensor& tensor, double std, SplitMix64& rng);
void FillUniform(const at::Tensor& tensor, double bound, SplitMix64& rng);  // [-bound, bound)

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_DETERMINISTIC_RANDOM_H_
