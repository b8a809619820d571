// The training data a worker draws its batches from, and the factory that opens one of the
// fetched data sets (scripts/fetch_data.sh) by name.
//
// Determinism: a training batch is a pure function of (seed, rank, world size, step), so a
// worker that restarts or joins late draws what it would have drawn; the validation batch is
// the same on every worker. Sampling uses demod's own generator
// (worker/models/deterministic_random.h), not torch's, so it does not depend on the LibTorch build.
//
// Sharding: Shard(rank, world_size) gives each worker a disjoint, contiguous part of the
// training split; call it again whenever membership changes. A fresh data set is unsharded
// (rank 0 of 1).
//
// The whole data set is held in memory (SOTU: 11 MB, Fashion-MNIST: 55 MB). Used from one
// thread at a time.
#ifndef DEMOD_WORKER_MODELS_DATASET_H_
#define DEMOD_WORKER_MODELS_DATASET_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/model.h"

namespace demod {

class Dataset {
 public:
  virtual ~Dataset();

  // The batch of training step `step` (>= 0) from this worker's shard; batch_size >= 1.
  virtual Batch TrainBatch(int64_t step, int64_t batch_size, at::Device device) = 0;

  // TrainBatch for the step after the last one drawn (0 first, or set_next_step's).
  Batch NextTrainBatch(int64_t batch_size, at::Device device);
  void set_next_step(int64_t step) { next_step_ = step; }
  int64_t next_step() const { return next_step_; }

  // A fixed held-out batch of up to batch_size samples (fewer when the split is smaller),
  // identical on every worker and every call.
  virtual Batch ValidationBatch(int64_t batch_size, at::Device device) = 0;

  // INVALID_ARGUMENT unless 0 <= rank < world_size, or when a shard would be too small to
  // draw one sample from; the previous shard then stays.
  virtual absl::Status Shard(int rank, int world_size) = 0;

  // One line for logs: the data set, split sizes, this worker's shard.
  virtual std::string Describe() const = 0;

 private:
  int64_t next_step_ = 0;
};

// kind "sotu": byte-level text, samples of context_length bytes (>= 1).
// kind "fashion-mnist": 28x28 images in 10 classes; context_length is ignored.
// NOT_FOUND (naming scripts/fetch_data.sh) when the files are missing from data_dir;
// DATA_LOSS for a malformed file; INVALID_ARGUMENT for an unknown kind.
absl::StatusOr<std::unique_ptr<Dataset>> OpenDataset(const std::string& kind,
                                                     const std::string& data_dir,
                                                     int64_t context_length, uint64_t seed);

// The seed of the training batch of (seed, rank, step), shared by the data sets.
uint64_t BatchSeed(uint64_t seed, int rank, int64_t step);

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_DATASET_H_
