#include "worker/training/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/support/scoped_temp_dir.h"
#include "tests/support/status_matchers.h"
#include "worker/optimizer/parameter_state.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

TEST(CheckpointTest, SaveLoadAndCorruption) {
  const ScopedTempDir scratch("demod-checkpoint");
  const std::string dir = scratch.path() + "/nested";
  ASSERT_OK_AND_ASSIGN(std::optional<Checkpoint> none, LoadCheckpoint(dir));
  EXPECT_FALSE(none.has_value());

  Checkpoint saved{"run-7", 42,
                   SerializeTensors({{"w", at::arange(12, at::kFloat).view({3, 4})},
                                     {"b", at::arange(5, at::kFloat).to(at::kBFloat16)}}),
                   SerializeTensors({{"momentum.0", at::ones({2, 8}, at::kFloat)}})};
  ASSERT_OK(SaveCheckpoint(dir, saved));
  saved.step = 43;  // a second save replaces the first
  ASSERT_OK(SaveCheckpoint(dir, saved));
  absl::StatusOr<std::optional<Checkpoint>> loaded = LoadCheckpoint(dir);
  ASSERT_OK(loaded);
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->run_id, "run-7");
  EXPECT_EQ((*loaded)->step, 43);
  EXPECT_EQ((*loaded)->parameters, saved.parameters);
  EXPECT_EQ((*loaded)->momentum, saved.momentum);

  FILE* f = fopen((dir + "/checkpoint.bin").c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  fseek(f, 30, SEEK_SET);
  fputc('X', f);
  fclose(f);
  absl::StatusOr<std::optional<Checkpoint>> corrupt = LoadCheckpoint(dir);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(corrupt.status().message(), HasSubstr("checkpoint.bin"));
}

}  // namespace
}  // namespace demod
