#include "worker/models/deterministic_random.h"

#include <gtest/gtest.h>

namespace demod {
namespace {

TEST(SplitMix64Test, KnownSequence) {
  // The reference implementation's first outputs for seed 1234567.
  SplitMix64 rng(1234567);
  EXPECT_EQ(rng.Next(), 6457827717110365317ULL);
  EXPECT_EQ(rng.Next(), 3203168211198807973ULL);
}

TEST(SplitMix64Test, FillNormalHasTheRequestedSpread) {
  SplitMix64 rng(5);
  at::Tensor t = at::empty({100000});
  FillNormal(t, 0.02, rng);
  EXPECT_NEAR(t.mean().item<double>(), 0.0, 0.001);
  EXPECT_NEAR(t.std().item<double>(), 0.02, 0.0005);
  FillUniform(t, 0.5, rng);
  EXPECT_LE(t.abs().max().item<double>(), 0.5);
  EXPECT_NE(MixSeed(1, 2), MixSeed(2, 1));
}

}  // namespace
}  // namespace demod
