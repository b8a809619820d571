#include "common/chunk_layout.h"

#include <tuple>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ChunkLengthTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(ChunkLengthTest, MatchesTheReferenceRule) {
  const auto [dim, target, expected] = GetParam();
  EXPECT_EQ(ChunkLength(dim, target), expected) << "dim " << dim << " target " << target;
}

// The table in shared/notes/demo-algorithm.md: {dim, target, chunk length}.
INSTANTIATE_TEST_SUITE_P(
    NotesTable, ChunkLengthTest,
    ::testing::Values(std::make_tuple(96, 64, 48), std::make_tuple(200, 64, 50),
                      std::make_tuple(130, 64, 26), std::make_tuple(37, 64, 37),
                      std::make_tuple(64, 64, 64), std::make_tuple(1, 64, 1),
                      std::make_tuple(7919, 64, 1), std::make_tuple(160, 64, 40),
                      std::make_tuple(72, 64, 36), std::make_tuple(37, 32, 1),
                      std::make_tuple(130, 32, 26), std::make_tuple(200, 32, 25)));

TEST(ChunkLengthPropertyTest, AlwaysADivisorNoLargerThanTargetUnlessTheWholeDimension) {
  for (int64_t dim = 1; dim <= 300; ++dim) {
    for (int64_t target = 1; target <= 70; ++target) {
      const int64_t chunk = ChunkLength(dim, target);
      ASSERT_GE(chunk, 1);
      ASSERT_EQ(dim % chunk, 0) << dim << " " << target;
      ASSERT_LE(chunk, std::max(target, int64_t{1})) << dim << " " << target;
      if (dim % target == 0) {
        ASSERT_EQ(chunk, target);
      }
      if (dim <= target) {
        ASSERT_EQ(chunk, dim);
      }
    }
  }
}

TEST(MakeChunkLayoutTest, OneDimensional) {
  absl::StatusOr<ChunkLayout> layout = MakeChunkLayout({96}, 64, 32);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_FALSE(layout->is_2d());
  EXPECT_THAT(layout->matrix_shape, ElementsAre(96));
  EXPECT_THAT(layout->chunk_grid, ElementsAre(2));
  EXPECT_EQ(layout->chunk_rows, 1);
  EXPECT_EQ(layout->chunk_cols, 48);
  EXPECT_EQ(layout->chunk_size(), 48);
  EXPECT_EQ(layout->num_chunks(), 2);
  EXPECT_EQ(layout->num_elements(), 96);
  EXPECT_EQ(layout->topk, 32);
  EXPECT_EQ(layout->num_selected(), 64);
}

TEST(MakeChunkLayoutTest, TwoDimensional) {
  absl::StatusOr<ChunkLayout> layout = MakeChunkLayout({96, 200}, 64, 32);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_TRUE(layout->is_2d());
  EXPECT_THAT(layout->matrix_shape, ElementsAre(96, 200));
  EXPECT_EQ(layout->chunk_rows, 48);
  EXPECT_EQ(layout->chunk_cols, 50);
  EXPECT_THAT(layout->chunk_grid, ElementsAre(2, 4));
  EXPECT_EQ(layout->chunk_size(), 48 * 50);
  EXPECT_EQ(layout->num_chunks(), 8);
  EXPECT_EQ(layout->num_elements(), 96 * 200);
  EXPECT_EQ(layout->num_selected(), 8 * 32);
}

TEST(MakeChunkLayoutTest, ScalarIsOneDimensionalOfLengthOne) {
  absl::StatusOr<ChunkLayout> layout = MakeChunkLayout({}, 64, 32);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_FALSE(layout->is_2d());
  EXPECT_THAT(layout->matrix_shape, ElementsAre(1));
  EXPECT_THAT(layout->chunk_grid, ElementsAre(1));
  EXPECT_EQ(layout->chunk_size(), 1);
  EXPECT_EQ(layout->topk, 1);  // clamped to the chunk
}

TEST(MakeChunkLayoutTest, RankThreeFlattensTrailingDimensions) {
  // A 3x3 convolution kernel with 128 output channels and 4 inputs: [128, 36].
  absl::StatusOr<ChunkLayout> layout = MakeChunkLayout({128, 4, 3, 3}, 64, 32);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_THAT(layout->matrix_shape, ElementsAre(128, 36));
  EXPECT_EQ(layout->chunk_rows, 64);
  EXPECT_EQ(layout->chunk_cols, 36);
  EXPECT_THAT(layout->chunk_grid, ElementsAre(2, 1));
  EXPECT_EQ(layout->topk, 32);

  absl::StatusOr<ChunkLayout> rank3 = MakeChunkLayout({8, 3, 3}, 64, 32);
  ASSERT_TRUE(rank3.ok()) << rank3.status();
  EXPECT_THAT(rank3->matrix_shape, ElementsAre(8, 9));
  EXPECT_EQ(rank3->chunk_rows, 8);
  EXPECT_EQ(rank3->chunk_cols, 9);
  EXPECT_THAT(rank3->chunk_grid, ElementsAre(1, 1));
  EXPECT_EQ(*rank3, *MakeChunkLayout({8, 9}, 64, 32));
}

TEST(MakeChunkLayoutTest, TopkIsClampedToTheChunk) {
  absl::StatusOr<ChunkLayout> small = MakeChunkLayout({10}, 64, 32);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->chunk_size(), 10);
  EXPECT_EQ(small->topk, 10);

  absl::StatusOr<ChunkLayout> prime = MakeChunkLayout({7919}, 64, 32);  // chunks of 1
  ASSERT_TRUE(prime.ok()) << prime.status();
  EXPECT_EQ(prime->chunk_size(), 1);
  EXPECT_EQ(prime->num_chunks(), 7919);
  EXPECT_EQ(prime->topk, 1);

  absl::StatusOr<ChunkLayout> large = MakeChunkLayout({64, 64}, 64, 32);
  ASSERT_TRUE(large.ok()) << large.status();
  EXPECT_EQ(large->topk, 32);
}

TEST(MakeChunkLayoutTest, RejectsInvalidArguments) {
  struct Case {
    std::vector<int64_t> shape;
    int64_t target;
    int64_t topk;
    const char* message;
  };
  for (const Case& c : {Case{{0}, 64, 32, "every dimension must be >= 1, got shape [0]"},
                        Case{{4, -2}, 64, 32, "got shape [4, -2]"},
                        Case{{4}, 0, 32, "chunk size must be >= 1, got 0"},
                        Case{{4}, 64, 0, "topk must be >= 1, got 0"},
                        Case{{4}, 64, -1, "topk must be >= 1, got -1"}}) {
    absl::StatusOr<ChunkLayout> layout = MakeChunkLayout(c.shape, c.target, c.topk);
    EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(layout.status().message(), HasSubstr(c.message));
  }
}

TEST(ShapeToStringTest, Formats) {
  EXPECT_EQ(ShapeToString({}), "[]");
  EXPECT_EQ(ShapeToString({7}), "[7]");
  EXPECT_EQ(ShapeToString({2, 3}), "[2, 3]");
}

}  // namespace
}  // namespace demod
