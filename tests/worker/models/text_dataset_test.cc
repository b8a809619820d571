#include "worker/models/text_dataset.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/status_matchers.h"
#include "worker/models/dataset.h"

namespace demod {
namespace {

// A corpus of 3 files whose bytes each encode their position modulo 251, so a window's
// bytes tell where in the stream it came from.
std::string MakeCorpus(const std::string& name) {
  const std::string dir = testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  int64_t pos = 0;
  for (const char* file : {"b.txt", "a.txt", "c.txt"}) {  // read as a, b, c
    std::ofstream out(dir + "/" + file, std::ios::binary);
    (void)file;
    for (int i = 0; i < 4000; ++i, ++pos) out.put(static_cast<char>(pos % 251));
  }
  std::ofstream(dir + "/ignored.md") << "not text";
  return dir;
}

std::unique_ptr<TextDataset> Open(const std::string& dir, int64_t context, uint64_t seed = 9) {
  return ValueOrStop(TextDataset::Open(dir, context, seed));
}

TEST(TextDatasetTest, SplitsAndShapes) {
  auto ds = Open(MakeCorpus("text_shapes"), 16);
  EXPECT_EQ(ds->train_bytes() + ds->validation_bytes(), 12000);
  EXPECT_EQ(ds->validation_bytes(), 600);
  Batch b = ds->TrainBatch(0, 4, at::kCPU);
  EXPECT_EQ(b.inputs.sizes(), at::IntArrayRef({4, 16}));
  EXPECT_EQ(b.targets.sizes(), at::IntArrayRef({4, 16}));
  EXPECT_EQ(b.inputs.scalar_type(), at::kLong);
  EXPECT_EQ(b.tokens, 64);
  EXPECT_TRUE(at::equal(b.inputs.slice(1, 1), b.targets.slice(1, 0, 15)));
}

// The stream position of a window, recovered from its first bytes (files are read sorted).
int64_t Position(const at::Tensor& window_inputs, int64_t lo, int64_t hi) {
  for (int64_t p = lo; p < hi; ++p) {
    bool match = true;
    for (int64_t j = 0; j < window_inputs.size(0) && match; ++j) {
      match = window_inputs[j].item<int64_t>() == (p + j) % 251;
    }
    if (match) return p;
  }
  return -1;
}

TEST(TextDatasetTest, ShardsAreDisjointAndDeterministic) {
  const std::string dir = MakeCorpus("text_shards");
  const int world = 3;
  for (int rank = 0; rank < world; ++rank) {
    auto ds = Open(dir, 8);
    ASSERT_TRUE(ds->Shard(rank, world).ok());
    const int64_t train = ds->train_bytes();
    EXPECT_EQ(ds->shard_begin(), train * rank / world);
    EXPECT_EQ(ds->shard_end(), train * (rank + 1) / world);
    for (int64_t step = 0; step < 5; ++step) {
      Batch b = ds->TrainBatch(step, 6, at::kCPU);
      for (int64_t i = 0; i < 6; ++i) {
        // The window (inputs and the final target) lies inside this shard only.
        const int64_t p = Position(b.inputs[i], ds->shard_begin(), ds->shard_end() - 8);
        EXPECT_GE(p, 0) << "rank " << rank << " step " << step << " sample " << i;
      }
      // Same (seed, rank, step): the same batch, from another instance too.
      auto again = Open(dir, 8);
      ASSERT_TRUE(again->Shard(rank, world).ok());
      EXPECT_TRUE(at::equal(again->TrainBatch(step, 6, at::kCPU).inputs, b.inputs));
    }
    EXPECT_FALSE(
        at::equal(ds->TrainBatch(0, 6, at::kCPU).inputs, ds->TrainBatch(1, 6, at::kCPU).inputs));
  }
}

TEST(TextDatasetTest, NextTrainBatchCountsSteps) {
  auto ds = Open(MakeCorpus("text_next"), 8);
  Batch first = ds->NextTrainBatch(4, at::kCPU);
  Batch second = ds->NextTrainBatch(4, at::kCPU);
  EXPECT_TRUE(at::equal(first.inputs, ds->TrainBatch(0, 4, at::kCPU).inputs));
  EXPECT_TRUE(at::equal(second.inputs, ds->TrainBatch(1, 4, at::kCPU).inputs));
  ds->set_next_step(7);
  EXPECT_TRUE(
      at::equal(ds->NextTrainBatch(4, at::kCPU).inputs, ds->TrainBatch(7, 4, at::kCPU).inputs));
}

TEST(TextDatasetTest, ValidationIsFixedAndHeldOut) {
  const std::string dir = MakeCorpus("text_validation");
  auto a = Open(dir, 8, 1), b = Open(dir, 8, 2);
  ASSERT_TRUE(b->Shard(1, 2).ok());
  Batch va = a->ValidationBatch(5, at::kCPU);
  EXPECT_TRUE(at::equal(va.inputs, b->ValidationBatch(5, at::kCPU).inputs));
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_GE(Position(va.inputs[i], a->train_bytes(), 12000 - 8), a->train_bytes());
  }
}

TEST(TextDatasetTest, Errors) {
  const std::string dir = MakeCorpus("text_errors");
  auto ds = Open(dir, 8);
  EXPECT_EQ(ds->Shard(3, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ds->Shard(0, 100000).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TextDataset::Open(dir, 1000, 0).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status missing = OpenDataset("sotu", testing::TempDir() + "/no_such_data", 8, 0).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("scripts/fetch_data.sh"), std::string::npos) << missing;
  EXPECT_EQ(OpenDataset("imagenet", dir, 8, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace demod

namespace demod {
namespace {

// The fetched data sets (scripts/fetch_data.sh), when present: run with
// --gtest_also_run_disabled_tests and DEMOD_DATA_DIR (default ./data).
TEST(RealDataTest, DISABLED_OpensTheFetchedDataSets) {
  const char* env = std::getenv("DEMOD_DATA_DIR");
  const std::string dir = env != nullptr ? env : "data";
  for (const char* kind : {"sotu", "fashion-mnist"}) {
    absl::StatusOr<std::unique_ptr<Dataset>> ds = OpenDataset(kind, dir, 128, 0);
    ASSERT_TRUE(ds.ok()) << ds.status();
    ASSERT_TRUE((*ds)->Shard(1, 4).ok());
    Batch b = (*ds)->TrainBatch(0, 16, at::kCPU);
    Batch v = (*ds)->ValidationBatch(16, at::kCPU);
    std::printf("%s\n  train batch %s, validation batch %s\n", (*ds)->Describe().c_str(),
                c10::str(b.inputs.sizes()).c_str(), c10::str(v.inputs.sizes()).c_str());
  }
}

}  // namespace
}  // namespace demod
