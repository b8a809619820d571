#include "worker/replay/golden_run.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "worker/replay/replay.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

// A tiny, self-consistent run: one worker, one 1-D tensor of 2 elements, chunk 2, topk 2,
// lr 1, decay 1. Step: delta = g; everything is sent; update = -sign(g).
constexpr char kTinyRun[] = R"({
  "format": "demod-golden-v1",
  "hyper": {"lr": 1.0, "compression_decay": 1.0, "compression_topk": 2,
            "compression_chunk": 2, "weight_decay": 0.0},
  "workers": 1, "steps": 1,
  "params": [{"name": "w", "shape": [2], "init": [0.0, 0.0]}],
  "grads": [[[[3.0, 1.0]]]],
  "expected": [{
    "params_after": [[-1.0, -1.0]],
    "delta_after": [[[0.0, 0.0]]],
    "payload": [[{"chunk_grid": [1], "k": 2, "idx": [0, 1],
                  "val": [2.8284271247461903, 1.4142135623730951]}]]
  }]
})";

TEST(GoldenRunTest, ParsesAndReplaysWithinTolerance) {
  absl::StatusOr<GoldenRun> run = ParseGoldenRun(kTinyRun);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->workers, 1);
  EXPECT_EQ(run->params[0].shape, std::vector<int64_t>{2});
  absl::StatusOr<ReplayReport> report = Replay(*run);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->WithinTolerance()) << report->Summary();
  EXPECT_EQ(report->chunks, 1);
}

TEST(GoldenRunTest, ReportsAWrongExpectationAsOutOfTolerance) {
  std::string text = kTinyRun;
  text.replace(text.find("[[-1.0, -1.0]]"), 14, "[[-1.0, 1.0]]");
  absl::StatusOr<GoldenRun> run = ParseGoldenRun(text);
  ASSERT_TRUE(run.ok()) << run.status();
  absl::StatusOr<ReplayReport> report = Replay(*run);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->WithinTolerance());
  EXPECT_EQ(report->params_mismatched, 1);
  EXPECT_THAT(report->Summary(), HasSubstr("FAIL"));
}

TEST(GoldenRunTest, RejectsMalformedFiles) {
  EXPECT_FALSE(ParseGoldenRun("{").ok());
  EXPECT_THAT(ParseGoldenRun("{}").status().message(), HasSubstr("format"));
  std::string bad_size = kTinyRun;
  bad_size.replace(bad_size.find("[[[[3.0, 1.0]]]]"), 16, "[[[[3.0]]]]");
  EXPECT_THAT(ParseGoldenRun(bad_size).status().message(), HasSubstr("grads[0][0][0]"));
  EXPECT_EQ(ReadGoldenRun("/nonexistent.json").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace demod
