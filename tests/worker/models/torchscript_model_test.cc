#include "worker/models/torchscript_model.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <fstream>
#include <string>

#include "worker/models/model.h"

namespace demod {
namespace {

// Scripted in C++ (Module::define compiles TorchScript source), so no Python is needed.
std::string SaveModule(const std::string& name, const std::string& forward_source) {
  torch::jit::Module m("__torch__.Quadratic");
  m.register_parameter("w", at::zeros({4}).requires_grad_(), /*is_buffer=*/false);
  m.register_parameter("frozen", at::ones({2}), /*is_buffer=*/false);
  m.define(forward_source);
  const std::string path = testing::TempDir() + "/" + name + ".pt";
  m.save(path);
  return path;
}

TEST(TorchScriptModelTest, LossAndParameters) {
  const std::string path = SaveModule("quadratic", R"(
def forward(self, inputs, targets):
    return ((inputs * self.w - targets) ** 2).mean()
)");
  ModelSpec spec;
  spec.kind = "torchscript";
  spec.torchscript_path = path;
  absl::StatusOr<std::unique_ptr<Model>> model = MakeModel(spec, at::kCPU);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<NamedTensor> params = (*model)->NamedParameters();
  ASSERT_EQ(params.size(), 1u);  // "frozen" does not require gradients
  EXPECT_EQ(params[0].first, "w");
  Batch batch{at::ones({3, 4}), at::full({3, 4}, 2.0), 3};
  absl::StatusOr<at::Tensor> loss = (*model)->Loss(batch);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_FLOAT_EQ(loss->item<float>(), 4.0f);
  loss->backward();
  EXPECT_TRUE(at::allclose(params[0].second.grad(), at::full({4}, -1.0)));
  (*model)->SetTraining(false);
  EXPECT_NE((*model)->Describe().find("4 parameters"), std::string::npos);
}

TEST(TorchScriptModelTest, Errors) {
  EXPECT_EQ(LoadTorchScriptModel(testing::TempDir() + "/missing.pt", at::kCPU).status().code(),
            absl::StatusCode::kNotFound);

  const std::string garbage = testing::TempDir() + "/garbage.pt";
  std::ofstream(garbage) << "this is not a zip archive";
  absl::Status s = LoadTorchScriptModel(garbage, at::kCPU).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  const std::string one_arg = SaveModule("one_arg", R"(
def forward(self, inputs):
    return (inputs * self.w).sum()
)");
  s = LoadTorchScriptModel(one_arg, at::kCPU).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("forward(self, inputs, targets)"), std::string::npos) << s;

  const std::string vector_loss = SaveModule("vector_loss", R"(
def forward(self, inputs, targets):
    return inputs * self.w - targets
)");
  absl::StatusOr<std::unique_ptr<Model>> m = LoadTorchScriptModel(vector_loss, at::kCPU);
  ASSERT_TRUE(m.ok()) << m.status();
  Batch batch{at::ones({3, 4}), at::ones({3, 4}), 3};
  EXPECT_EQ((*m)->Loss(batch).status().code(), absl::StatusCode::kInvalidArgument);
  Batch wrong_shape{at::ones({3, 5}), at::ones({3, 5}), 3};
  EXPECT_EQ((*m)->Loss(wrong_shape).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace demod
