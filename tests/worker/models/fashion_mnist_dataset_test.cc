#include "worker/models/fashion_mnist_dataset.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "worker/models/dataset.h"
#include "worker/models/idx_file.h"

namespace demod {
namespace {

std::string Idx(unsigned char type, std::vector<uint32_t> dims, const std::string& data) {
  std::string s = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>(d >> shift));
  }
  return s + data;
}

TEST(IdxFileTest, ParsesAndRejects) {
  absl::StatusOr<at::Tensor> t = ParseIdx(Idx(0x08, {2, 3}, "\x01\x02\x03\x04\x05\x06"), "t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->sizes(), at::IntArrayRef({2, 3}));
  EXPECT_EQ((*t)[1][2].item<int>(), 6);

  const auto code = [](const std::string& bytes) { return ParseIdx(bytes, "t").status().code(); };
  EXPECT_EQ(code(Idx(0x08, {2, 3}, "\x01\x02\x03")), absl::StatusCode::kDataLoss);   // truncated
  EXPECT_EQ(code(Idx(0x08, {2}, "\x01\x02\x03")), absl::StatusCode::kDataLoss);      // trailing
  EXPECT_EQ(code(Idx(0x0D, {1}, "\x01\x02\x03\x04")), absl::StatusCode::kDataLoss);  // float
  EXPECT_EQ(code(std::string("\x12\x34\x08\x01\x00\x00\x00\x01\x05", 9)),
            absl::StatusCode::kDataLoss);  // bad magic
  EXPECT_EQ(code("\x00\x00"), absl::StatusCode::kDataLoss);
  EXPECT_EQ(code(Idx(0x08, {0xffffffff, 0xffffffff}, "")), absl::StatusCode::kDataLoss);
  absl::Status magic =
      ParseIdx(std::string("\x12\x34\x08\x01\x00\x00\x00\x01\x05", 9), "f").status();
  EXPECT_NE(magic.message().find("bad IDX magic 0x12340801"), std::string::npos) << magic;
}

TEST(IdxFileTest, ReadsAFile) {
  const std::string path = testing::TempDir() + "/tiny-idx1-ubyte";
  std::ofstream(path, std::ios::binary) << Idx(0x08, {4}, std::string("\x00\x01\x02\x03", 4));
  absl::StatusOr<at::Tensor> t = ReadIdxFile(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->sum().item<int>(), 6);
  EXPECT_EQ(ReadIdxFile(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

// A data set of n images whose pixels all equal their index, labels index % 10.
std::string WriteTinyFashionMnist(const std::string& name, int n_train, int n_test) {
  const std::string dir = testing::TempDir() + "/" + name + "/fashion-mnist";
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& prefix, int n) {
    std::string images, labels;
    for (int i = 0; i < n; ++i) {
      images += std::string(28 * 28, static_cast<char>(i));
      labels.push_back(static_cast<char>(i % 10));
    }
    std::ofstream(dir + "/" + prefix + "-images-idx3-ubyte", std::ios::binary)
        << Idx(0x08, {uint32_t(n), 28, 28}, images);
    std::ofstream(dir + "/" + prefix + "-labels-idx1-ubyte", std::ios::binary)
        << Idx(0x08, {uint32_t(n)}, labels);
  };
  write("train", n_train);
  write("t10k", n_test);
  return testing::TempDir() + "/" + name;
}

TEST(FashionMnistDatasetTest, ShardsBatchesAndValidation) {
  const std::string data_dir = WriteTinyFashionMnist("fmnist_ok", 90, 20);
  absl::StatusOr<std::unique_ptr<Dataset>> ds = OpenDataset("fashion-mnist", data_dir, 0, 4);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_TRUE((*ds)->Shard(1, 3).ok());
  Batch b = (*ds)->TrainBatch(0, 16, at::kCPU);
  EXPECT_EQ(b.inputs.sizes(), at::IntArrayRef({16, 1, 28, 28}));
  EXPECT_EQ(b.inputs.scalar_type(), at::kFloat);
  EXPECT_EQ(b.targets.scalar_type(), at::kLong);
  EXPECT_EQ(b.tokens, 16);
  // Undo the normalization: every image of rank 1's shard has index 30..59.
  at::Tensor index = (b.inputs.select(2, 0).select(2, 0).squeeze(1) * 0.3530 + 0.2860) * 255;
  index = index.round().to(at::kLong);
  EXPECT_GE(index.min().item<int64_t>(), 30);
  EXPECT_LT(index.max().item<int64_t>(), 60);
  EXPECT_TRUE(at::equal(b.targets, index % 10));
  EXPECT_TRUE(at::equal((*ds)->TrainBatch(0, 16, at::kCPU).inputs, b.inputs));

  Batch v = (*ds)->ValidationBatch(50, at::kCPU);
  EXPECT_EQ(v.inputs.size(0), 20);  // the whole test split, in order
  EXPECT_TRUE(at::equal(v.targets, at::arange(20, at::kLong) % 10));
}

TEST(FashionMnistDatasetTest, Errors) {
  absl::Status missing =
      OpenDataset("fashion-mnist", testing::TempDir() + "/nothing", 0, 0).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("scripts/fetch_data.sh"), std::string::npos) << missing;

  const std::string data_dir = WriteTinyFashionMnist("fmnist_bad", 10, 5);
  std::ofstream(data_dir + "/fashion-mnist/t10k-labels-idx1-ubyte", std::ios::binary)
      << Idx(0x08, {4}, "\x01\x02\x03\x04");  // 4 labels for 5 images
  EXPECT_EQ(OpenDataset("fashion-mnist", data_dir, 0, 0).status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace demod
