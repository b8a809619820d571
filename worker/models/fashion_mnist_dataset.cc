#include "worker/models/fashion_mnist_dataset.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/deterministic_random.h"
#include "worker/models/idx_file.h"

namespace demod {
namespace {

constexpr int64_t kSide = 28;
constexpr int64_t kClasses = 10;
// Per-pixel mean and standard deviation of the 60,000 training images, scaled to [0, 1].
constexpr double kMean = 0.2860;
constexpr double kStd = 0.3530;

absl::Status CheckPair(const at::Tensor& images, const at::Tensor& labels,
                       absl::string_view split) {
  if (images.dim() != 3 || images.size(1) != kSide || images.size(2) != kSide) {
    return absl::DataLossError(absl::StrCat(
        "fashion-mnist ", split, " images: expected [N, 28, 28], got ", c10::str(images.sizes())));
  }
  if (labels.dim() != 1 || labels.size(0) != images.size(0)) {
    return absl::DataLossError(absl::StrCat("fashion-mnist ", split, " labels: expected [",
                                            images.size(0), "] to match the images, got ",
                                            c10::str(labels.sizes())));
  }
  if (images.size(0) == 0) {
    return absl::DataLossError(absl::StrCat("fashion-mnist ", split, " split is empty"));
  }
  const int64_t max_label = labels.max().item<int64_t>();
  if (max_label >= kClasses) {
    return absl::DataLossError(absl::StrCat("fashion-mnist ", split, " labels: class ", max_label,
                                            " out of range [0, ", kClasses, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<FashionMnistDataset>> FashionMnistDataset::Open(
    const std::string& dir, uint64_t seed) {
  const char* names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  std::vector<at::Tensor> tensors;
  for (const char* name : names) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      return absl::NotFoundError(
          absl::StrCat("no ", path, ": run scripts/fetch_data.sh DATA_DIR first"));
    }
    absl::StatusOr<at::Tensor> t = ReadIdxFile(path);
    if (!t.ok()) return t.status();
    tensors.push_back(*std::move(t));
  }
  return FromTensors(tensors[0], tensors[1], tensors[2], tensors[3], seed);
}

absl::StatusOr<std::unique_ptr<FashionMnistDataset>> FashionMnistDataset::FromTensors(
    at::Tensor train_images, at::Tensor train_labels, at::Tensor test_images,
    at::Tensor test_labels, uint64_t seed) {
  for (const at::Tensor* t : {&train_images, &train_labels, &test_images, &test_labels}) {
    if (!t->defined() || t->scalar_type() != at::kByte || !t->device().is_cpu()) {
      return absl::InvalidArgumentError(
          "fashion-mnist: images and labels must be uint8 CPU tensors");
    }
  }
  absl::Status ok = CheckPair(train_images, train_labels, "train");
  if (ok.ok()) ok = CheckPair(test_images, test_labels, "test");
  if (!ok.ok()) return ok;
  return std::unique_ptr<FashionMnistDataset>(
      new FashionMnistDataset(std::move(train_images), std::move(train_labels),
                              std::move(test_images), std::move(test_labels), seed));
}

FashionMnistDataset::FashionMnistDataset(at::Tensor train_images, at::Tensor train_labels,
                                         at::Tensor test_images, at::Tensor test_labels,
                                         uint64_t seed)
    : train_images_(std::move(train_images)),
      train_labels_(std::move(train_labels)),
      test_images_(std::move(test_images)),
      test_labels_(std::move(test_labels)),
      seed_(seed),
      shard_end_(train_images_.size(0)) {}

absl::Status FashionMnistDataset::Shard(int rank, int world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard: need 0 <= rank < world size, got rank ", rank, " of ", world_size));
  }
  const int64_t n = train_size();
  const int64_t begin = n * rank / world_size, end = n * (rank + 1) / world_size;
  if (end <= begin) {
    return absl::InvalidArgumentError(absl::StrCat("shard ", rank, " of ", world_size, ": ", n,
                                                   " training images leave this shard empty"));
  }
  rank_ = rank;
  world_size_ = world_size;
  shard_begin_ = begin;
  shard_end_ = end;
  return absl::OkStatus();
}

Batch FashionMnistDataset::Gather(const at::Tensor& images, const at::Tensor& labels,
                                  const at::Tensor& indices, at::Device device) {
  at::Tensor x = images.index_select(0, indices).to(device).unsqueeze(1).to(at::kFloat);
  x = (x.div_(255.0).sub_(kMean)).div_(kStd);
  at::Tensor y = labels.index_select(0, indices).to(device).to(at::kLong);
  return Batch{x, y, indices.size(0)};
}

Batch FashionMnistDataset::TrainBatch(int64_t step, int64_t batch_size, at::Device device) {
  SplitMix64 rng(BatchSeed(seed_, rank_, step));
  at::Tensor indices = at::empty({batch_size}, at::kLong);
  int64_t* idx = indices.data_ptr<int64_t>();
  for (int64_t i = 0; i < batch_size; ++i)
    idx[i] = shard_begin_ + rng.Below(shard_end_ - shard_begin_);
  return Gather(train_images_, train_labels_, indices, device);
}

Batch FashionMnistDataset::ValidationBatch(int64_t batch_size, at::Device device) {
  return Gather(test_images_, test_labels_,
                at::arange(std::min(batch_size, validation_size()), at::kLong), device);
}

std::string FashionMnistDataset::Describe() const {
  return absl::StrCat("fashion-mnist: ", train_size(), " train, ", validation_size(),
                      " validation images, shard ", rank_, "/", world_size_, " = images [",
                      shard_begin_, ", ", shard_end_, ")");
}

}  // namespace demod
