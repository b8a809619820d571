// A test assertion that two OptimizerConfigs are equal, field by field (each field a failure
// of its own, named), for the tests of the configuration file and of the wire settings.
#ifndef DEMOD_TESTS_SUPPORT_EXPECT_SAME_OPTIMIZER_H_
#define DEMOD_TESTS_SUPPORT_EXPECT_SAME_OPTIMIZER_H_

#include <gtest/gtest.h>

#include "common/run_config.h"

namespace demod {

inline void ExpectSameOptimizer(const OptimizerConfig& actual, const OptimizerConfig& expected) {
  EXPECT_EQ(actual.algorithm, expected.algorithm);
  EXPECT_EQ(actual.value_encoding, expected.value_encoding);
  EXPECT_EQ(actual.lr.base_lr, expected.lr.base_lr);
  EXPECT_EQ(actual.lr.warmup_steps, expected.lr.warmup_steps);
  EXPECT_EQ(actual.lr.final_factor, expected.lr.final_factor);
  EXPECT_EQ(actual.compression_decay, expected.compression_decay);
  EXPECT_EQ(actual.compression_topk, expected.compression_topk);
  EXPECT_EQ(actual.compression_chunk, expected.compression_chunk);
  EXPECT_EQ(actual.weight_decay, expected.weight_decay);
  EXPECT_EQ(actual.adam_beta1, expected.adam_beta1);
  EXPECT_EQ(actual.adam_beta2, expected.adam_beta2);
  EXPECT_EQ(actual.adam_eps, expected.adam_eps);
}

}  // namespace demod

#endif  // DEMOD_TESTS_SUPPORT_EXPECT_SAME_OPTIMIZER_H_
