#include "common/sign_mean.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "absl/base/casts.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace demod {
namespace {

using ::testing::ElementsAre;

std::vector<float> Values(const SignMeanTable& table) {
  std::vector<float> values;
  for (uint32_t code = 0; code < table.size(); ++code) values.push_back(table.value(code));
  return values;
}

TEST(SignMeanTableTest, SmallTablesByHand) {
  EXPECT_THAT(Values(SignMeanTable::For(1)), ElementsAre(-1.0f, 1.0f));
  EXPECT_EQ(SignMeanTable::For(1).bits(), 1);
  EXPECT_THAT(Values(SignMeanTable::For(2)), ElementsAre(-1.0f, 0.0f, 1.0f));
  EXPECT_EQ(SignMeanTable::For(2).bits(), 2);
  // 2/4 is 1/2, one value; 3 bits hold the 7.
  EXPECT_THAT(Values(SignMeanTable::For(4)),
              ElementsAre(-1.0f, -0.5f, -1.0f / 3, 0.0f, 1.0f / 3, 0.5f, 1.0f));
  EXPECT_EQ(SignMeanTable::For(4).bits(), 3);
  EXPECT_EQ(SignMeanTable::For(4).EncodedBytes(3), 2);  // 9 bits
}

// Every mean the aggregation can give for up to P contributors' signs, summed in float as it
// sums them, has a code, and the code gives back the same bits.
TEST(SignMeanTableTest, EveryTallyOfUpToPSignsHasACode) {
  for (uint32_t p : {1u, 3u, 8u, 32u, 64u, SignMeanTable::kMaxContributors}) {
    SCOPED_TRACE(p);
    const SignMeanTable& table = SignMeanTable::For(p);
    EXPECT_EQ(&table, &SignMeanTable::For(p));  // built once
    EXPECT_LE(table.size(), size_t{1} << table.bits());
    EXPECT_GT(table.size(), size_t{1} << (table.bits() - 1));
    for (uint32_t c = 1; c <= p; ++c) {
      for (uint32_t plus = 0; plus <= c; ++plus) {
        float sum = -0.0f;
        for (uint32_t i = 0; i < c; ++i) sum += i < plus ? 1.0f : -1.0f;
        const float mean = sum / static_cast<float>(c);
        const std::optional<uint32_t> code = table.code(mean);
        ASSERT_TRUE(code.has_value()) << plus << " of " << c;
        EXPECT_EQ(absl::bit_cast<uint32_t>(table.value(*code)), absl::bit_cast<uint32_t>(mean));
      }
    }
    for (uint32_t code = 1; code < table.size(); ++code) {
      EXPECT_LT(table.value(code - 1), table.value(code));
    }
  }
}

TEST(SignMeanTableTest, OtherValuesHaveNoCode) {
  const SignMeanTable& table = SignMeanTable::For(4);
  EXPECT_FALSE(table.code(-0.0f).has_value());  // signs that cancel give +0
  EXPECT_FALSE(table.code(0.2f).has_value());   // needs 5 contributors
  EXPECT_FALSE(table.code(2.0f).has_value());
  EXPECT_TRUE(SignMeanTable::For(5).code(0.2f).has_value());
  // Beyond both ends, between neighbours, and not numbers, for tables of two codes and of many.
  for (uint32_t p : {1u, 4u, 64u}) {
    SCOPED_TRACE(p);
    const SignMeanTable& means = SignMeanTable::For(p);
    for (float value :
         {-2.0f, -1.5f, 1.5f, std::nextafter(1.0f, 0.0f), std::nextafter(-1.0f, 0.0f),
          std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
          std::numeric_limits<float>::quiet_NaN(), -0.0f}) {
      EXPECT_FALSE(means.code(value).has_value()) << value;
    }
    EXPECT_EQ(means.code(-1.0f), 0u);
    EXPECT_EQ(means.code(1.0f), means.size() - 1);
  }
}

}  // namespace
}  // namespace demod
