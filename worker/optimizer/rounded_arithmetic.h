// Element arithmetic that gives the same bits on every device: each operation is one IEEE 754
// binary32 operation, rounded to nearest, never fused with another. CPU and CUDA workers
// update their parameters through these functions (the sparse signed step of DeMo, the dense
// AdamW update), so a run can mix them and keep one set of parameters.
//
// On the GPU every operation is an explicit round-to-nearest intrinsic (nvcc contracts a * b + c
// into one fused multiply-add otherwise). On the host, a translation unit that includes this
// header must be compiled with -ffp-contract=off and -fno-math-errno: GCC fuses a product into
// a following sum across inlined calls, and with errno sqrt stays a library call that blocks
// vectorization (both are correctly rounded). CMake sets these flags on the files that use it.
// Finite inputs only: a NaN result's bits differ between devices. The optimizers refuse
// gradients that are not finite, and the wire's decoder values that are not, before these run.
#ifndef DEMOD_WORKER_OPTIMIZER_ROUNDED_ARITHMETIC_H_
#define DEMOD_WORKER_OPTIMIZER_ROUNDED_ARITHMETIC_H_

#include "worker/optimizer/host_device.h"

namespace demod {
namespace rounded {

DEMOD_HOST_DEVICE float Mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

DEMOD_HOST_DEVICE float Add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

DEMOD_HOST_DEVICE float Sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

DEMOD_HOST_DEVICE float Div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

DEMOD_HOST_DEVICE float Sqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}

// -1, 0 or 1 (0 for NaN).
DEMOD_HOST_DEVICE float Sign(float x) { return static_cast<float>((x > 0.0f) - (x < 0.0f)); }

// DeMo's step 10 for one element: p * keep (when decay) + step * sign(x), the product and the
// sum rounded separately, as ATen's p.mul_(keep); p.add_(sign, step) round them.
DEMOD_HOST_DEVICE float SignedStep(float p, float x, bool decay, float keep, float step) {
  const float kept = decay ? Mul(p, keep) : p;
  return Add(kept, Mul(step, Sign(x)));
}

// The scalars of one AdamW step, computed once per step in double on the host and rounded to
// float, so every device starts from the same values.
struct AdamWScalars {
  float beta1 = 0.9f;
  float one_minus_beta1 = 0.1f;
  float beta2 = 0.95f;
  float one_minus_beta2 = 0.05f;
  float bias_correction1 = 1.0f;  // 1 - beta1^t
  float bias_correction2 = 1.0f;  // 1 - beta2^t
  float eps = 1e-8f;
  float lr = 1e-3f;
  bool decay = false;
  float keep = 1.0f;  // 1 - lr * weight_decay
};

// One element of AdamW on the mean gradient g, in this order:
//   m <- m b1 + (1 - b1) g;  v <- v b2 + ((1 - b2) g) g
//   p <- p keep - lr ((m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps))
DEMOD_HOST_DEVICE void AdamWElement(float g, const AdamWScalars& s, float& m, float& v, float& p) {
  m = Add(Mul(m, s.beta1), Mul(s.one_minus_beta1, g));
  v = Add(Mul(v, s.beta2), Mul(Mul(s.one_minus_beta2, g), g));
  const float m_hat = Div(m, s.bias_correction1);
  const float v_hat = Div(v, s.bias_correction2);
  const float update = Div(m_hat, Add(Sqrt(v_hat), s.eps));
  const float kept = s.decay ? Mul(p, s.keep) : p;
  p = Sub(kept, Mul(s.lr, update));
}

}  // namespace rounded
}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_ROUNDED_ARITHMETIC_H_
