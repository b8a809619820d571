#include "common/run_settings.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

#include "tests/support/expect_same_optimizer.h"
#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

RunConfig Custom() {
  RunConfig c;
  c.run_id = "settings";
  c.total_steps = 321;
  c.fingerprint_interval = 7;
  c.max_frame_bytes = 4096;
  c.heartbeat_timeout = absl::Seconds(9);
  OptimizerConfig& o = c.optimizer;
  o.lr = {2e-3, 17, 0.25};
  o.compression_decay = 0.99;
  o.compression_topk = 8;
  o.compression_chunk = 32;
  o.weight_decay = 0.1;
  o.adam_beta1 = 0.8;
  o.adam_beta2 = 0.9;
  o.adam_eps = 1e-6;
  return c;
}

TEST(RunSettingsTest, WorkersReadWhatTheCoordinatorWrote) {
  for (OptimizerConfig::Algorithm algorithm :
       {OptimizerConfig::Algorithm::kDemo, OptimizerConfig::Algorithm::kAdamW}) {
    for (ValueEncoding encoding : {ValueEncoding::kFloat32, ValueEncoding::kBFloat16,
                                   ValueEncoding::kFloat16, ValueEncoding::kSign}) {
      RunConfig config = Custom();
      config.optimizer.algorithm = algorithm;
      config.optimizer.value_encoding = encoding;
      const v1::RunSettings run = RunSettingsOf(config);
      EXPECT_EQ(run.run_id(), "settings");
      EXPECT_EQ(run.total_steps(), 321);
      EXPECT_EQ(run.fingerprint_interval(), 7);
      EXPECT_EQ(run.max_frame_bytes(), 4096u);
      EXPECT_EQ(run.heartbeat_interval_ms(), 3000);
      ASSERT_OK_AND_ASSIGN(const OptimizerConfig read, OptimizerConfigOf(run.optimizer()));
      ExpectSameOptimizer(read, config.optimizer);
    }
  }
}

TEST(RunSettingsTest, UnknownEnumsAreRefusedByName) {
  v1::OptimizerSettings settings = RunSettingsOf(Custom()).optimizer();
  settings.set_algorithm(static_cast<v1::Algorithm>(9));
  absl::Status status = OptimizerConfigOf(settings).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("optimizer.algorithm 9"));

  settings = RunSettingsOf(Custom()).optimizer();
  settings.set_value_encoding(v1::VALUE_ENCODING_UNSPECIFIED);
  status = OptimizerConfigOf(settings).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("optimizer.value_encoding 0"));
}

TEST(RunSettingsTest, TheDenseBaselinesTableHoldsEveryCoefficient) {
  const std::vector<TensorShape> shapes = {{"w", {64, 64}}, {"b", {40}}};
  OptimizerConfig demo = Custom().optimizer;
  ASSERT_OK_AND_ASSIGN(const LayoutTable sparse, MakeRunLayoutTable(shapes, demo));
  for (const NamedLayout& t : sparse) EXPECT_EQ(t.layout.topk, 8) << t.name;

  OptimizerConfig adamw = demo;
  adamw.algorithm = OptimizerConfig::Algorithm::kAdamW;
  ASSERT_OK_AND_ASSIGN(const LayoutTable dense, MakeRunLayoutTable(shapes, adamw));
  for (const NamedLayout& t : dense) EXPECT_EQ(t.layout.topk, t.layout.chunk_size()) << t.name;
}

}  // namespace
}  // namespace demod
