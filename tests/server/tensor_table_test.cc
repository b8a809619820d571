#include "server/tensor_table.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

TensorSpecs Table(std::vector<std::tuple<std::string, std::vector<int64_t>, v1::DType>> t) {
  TensorSpecs specs;
  for (auto& [name, shape, dtype] : t) {
    v1::TensorSpec* s = specs.Add();
    s->set_name(name);
    for (int64_t d : shape) s->add_shape(d);
    s->set_dtype(dtype);
  }
  return specs;
}

TEST(TensorTableTest, ValidTableGivesItsShapes) {
  auto shapes =
      ValidateTensorSpecs(Table({{"w", {4, 8}, v1::DTYPE_FLOAT32}, {"b", {}, v1::DTYPE_BFLOAT16}}));
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  ASSERT_EQ(shapes->size(), 2u);
  EXPECT_EQ((*shapes)[0].shape, (std::vector<int64_t>{4, 8}));
  EXPECT_TRUE((*shapes)[1].shape.empty());
}

TEST(TensorTableTest, RejectsBadTables) {
  EXPECT_THAT(ValidateTensorSpecs(Table({})).status().message(), HasSubstr("empty"));
  EXPECT_THAT(ValidateTensorSpecs(Table({{"", {1}, v1::DTYPE_FLOAT32}})).status().message(),
              HasSubstr("#0 has an empty name"));
  EXPECT_THAT(
      ValidateTensorSpecs(Table({{"w", {1}, v1::DTYPE_FLOAT32}, {"w", {2}, v1::DTYPE_FLOAT32}}))
          .status()
          .message(),
      HasSubstr("'w' appears twice"));
  EXPECT_THAT(ValidateTensorSpecs(Table({{"w", {3, 0}, v1::DTYPE_FLOAT32}})).status().message(),
              HasSubstr("'w' has shape [3, 0]"));
  EXPECT_THAT(ValidateTensorSpecs(Table({{"w", {3}, v1::DTYPE_UNSPECIFIED}})).status().message(),
              HasSubstr("'w' has no valid dtype"));
}

TEST(TensorTableTest, NamesTheFirstDifference) {
  const TensorSpecs run = Table({{"a", {2, 3}, v1::DTYPE_FLOAT32}, {"b", {3}, v1::DTYPE_FLOAT32}});
  EXPECT_OK(CheckSameTensorSpecs(run, run));
  struct Case {
    TensorSpecs candidate;
    const char* message;
  };
  const std::vector<Case> cases = {
      {Table({{"x", {2, 3}, v1::DTYPE_FLOAT32}, {"b", {3}, v1::DTYPE_FLOAT32}}),
       "tensor #0 is 'x', the run's is 'a'"},
      {Table({{"a", {3, 2}, v1::DTYPE_FLOAT32}, {"b", {3}, v1::DTYPE_FLOAT32}}),
       "'a' has shape [3, 2], the run's is [2, 3]"},
      {Table({{"a", {2, 3}, v1::DTYPE_FLOAT32}, {"b", {3}, v1::DTYPE_BFLOAT16}}),
       "'b' has dtype DTYPE_BFLOAT16, the run's is DTYPE_FLOAT32"},
      {Table({{"a", {2, 3}, v1::DTYPE_FLOAT32}}), "1 tensors, the run's has 2"},
  };
  for (const Case& c : cases) {
    absl::Status s = CheckSameTensorSpecs(run, c.candidate);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << c.message;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace demod
