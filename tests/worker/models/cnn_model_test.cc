#include "worker/models/cnn_model.h"

#include <gtest/gtest.h>

#include <cmath>

#include "worker/models/model.h"

namespace demod {
namespace {

TEST(CnnModelTest, ShapesAndLoss) {
  ModelSpec spec;
  spec.kind = "cnn";
  spec.seed = 3;
  absl::StatusOr<std::unique_ptr<Model>> model = MakeModel(spec, at::kCPU);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<NamedTensor> params = (*model)->NamedParameters();
  ASSERT_EQ(params.size(), 8u);
  EXPECT_EQ(params[0].first, "conv1.weight");
  EXPECT_EQ(params[0].second.sizes(), at::IntArrayRef({16, 1, 3, 3}));
  EXPECT_EQ(params[4].first, "fc1.weight");
  EXPECT_EQ(params[4].second.sizes(), at::IntArrayRef({128, 32 * 7 * 7}));
  EXPECT_EQ(CountParameters(params), 206922);

  auto* cnn = static_cast<CnnModel*>(model->get());
  at::Tensor images = at::randn({5, 1, 28, 28});
  absl::StatusOr<at::Tensor> logits = cnn->Logits(images);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->sizes(), at::IntArrayRef({5, 10}));

  Batch batch{images, at::arange(5, at::kLong), 5};
  absl::StatusOr<at::Tensor> loss = cnn->Loss(batch);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_EQ(loss->dim(), 0);
  EXPECT_NEAR(loss->item<double>(), std::log(10.0), 0.5);
  loss->backward();
  EXPECT_TRUE(params[0].second.grad().defined());
}

TEST(CnnModelTest, RejectsBadBatches) {
  absl::StatusOr<std::unique_ptr<CnnModel>> cnn = CnnModel::Create(0, at::kCPU);
  ASSERT_TRUE(cnn.ok());
  EXPECT_EQ((*cnn)->Logits(at::randn({2, 3, 28, 28})).status().code(),
            absl::StatusCode::kInvalidArgument);
  Batch bad_class{at::randn({2, 1, 28, 28}), at::full({2}, 10, at::kLong), 2};
  EXPECT_EQ((*cnn)->Loss(bad_class).status().code(), absl::StatusCode::kInvalidArgument);
  Batch bad_count{at::randn({2, 1, 28, 28}), at::zeros({3}, at::kLong), 2};
  EXPECT_EQ((*cnn)->Loss(bad_count).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace demod
