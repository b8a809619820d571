// Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) for the CNN: 60,000 training and 10,000 test
// images, 28x28 grey, 10 classes, read from the four decompressed IDX files that
// scripts/fetch_data.sh puts in DATA_DIR/fashion-mnist.
//
// The test set is the validation split: the validation batch is its first images. Training
// images are cut into world_size contiguous shards (the file's order is already shuffled); a
// training batch samples its shard with replacement, from BatchSeed(seed, rank, step).
// inputs: float [B, 1, 28, 28], normalized with the training set's mean and deviation;
// targets: Long [B] classes.
#ifndef DEMOD_WORKER_MODELS_FASHION_MNIST_DATASET_H_
#define DEMOD_WORKER_MODELS_FASHION_MNIST_DATASET_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/models/dataset.h"

namespace demod {

class FashionMnistDataset : public Dataset {
 public:
  // NOT_FOUND (naming scripts/fetch_data.sh) when a file is missing; DATA_LOSS when a file is
  // malformed or images and labels disagree.
  static absl::StatusOr<std::unique_ptr<FashionMnistDataset>> Open(const std::string& dir,
                                                                   uint64_t seed);

  // From tensors already read: images uint8 [N, 28, 28], labels uint8 [N] in [0, 10).
  static absl::StatusOr<std::unique_ptr<FashionMnistDataset>> FromTensors(at::Tensor train_images,
                                                                          at::Tensor train_labels,
                                                                          at::Tensor test_images,
                                                                          at::Tensor test_labels,
                                                                          uint64_t seed);

  Batch TrainBatch(int64_t step, int64_t batch_size, at::Device device) override;
  Batch ValidationBatch(int64_t batch_size, at::Device device) override;
  absl::Status Shard(int rank, int world_size) override;
  std::string Describe() const override;

  int64_t train_size() const { return train_images_.size(0); }
  int64_t validation_size() const { return test_images_.size(0); }
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_end() const { return shard_end_; }

 private:
  FashionMnistDataset(at::Tensor train_images, at::Tensor train_labels, at::Tensor test_images,
                      at::Tensor test_labels, uint64_t seed);

  static Batch Gather(const at::Tensor& images, const at::Tensor& labels, const at::Tensor& indices,
                      at::Device device);

  at::Tensor train_images_, train_labels_, test_images_, test_labels_;
  uint64_t seed_;
  int rank_ = 0;
  int world_size_ = 1;
  int64_t shard_begin_ = 0;
  int64_t shard_end_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_FASHION_MNIST_DATASET_H_
