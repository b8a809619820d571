// Byte-level text for the GPT: the *.txt files of a folder (the SOTU corpus), concatenated in
// byte-wise sorted file-name order into one stream of bytes, each byte a token.
//
// The last 5% of the stream is the validation split; the rest is training, cut into
// world_size contiguous shards. A training sample is a window of context + 1 bytes inside
// this worker's shard (inputs the first context bytes, targets the last), at an offset drawn
// from BatchSeed(seed, rank, step); the validation batch is windows spread evenly over the
// validation split.
#ifndef DEMOD_WORKER_MODELS_TEXT_DATASET_H_
#define DEMOD_WORKER_MODELS_TEXT_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/models/dataset.h"

namespace demod {

class TextDataset : public Dataset {
 public:
  // NOT_FOUND when `dir` holds no .txt file; INVALID_ARGUMENT when context_length < 1 or a
  // split is shorter than one sample (context_length + 1 bytes).
  static absl::StatusOr<std::unique_ptr<TextDataset>> Open(const std::string& dir,
                                                           int64_t context_length, uint64_t seed);

  Batch TrainBatch(int64_t step, int64_t batch_size, at::Device device) override;
  Batch ValidationBatch(int64_t batch_size, at::Device device) override;
  absl::Status Shard(int rank, int world_size) override;
  std::string Describe() const override;

  int64_t train_bytes() const { return validation_begin_; }
  int64_t validation_bytes() const { return int64_t(bytes_.size()) - validation_begin_; }
  // This worker's shard of the training bytes: [begin, end).
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_end() const { return shard_end_; }

 private:
  TextDataset(std::string bytes, int64_t files, int64_t context_length, uint64_t seed);

  // Windows of context + 1 bytes starting at `offsets`, split into inputs and targets.
  Batch Windows(const std::vector<int64_t>& offsets, at::Device device) const;

  std::string bytes_;
  int64_t files_;
  int64_t context_;
  uint64_t seed_;
  int64_t validation_begin_;
  int rank_ = 0;
  int world_size_ = 1;
  int64_t shard_begin_ = 0;
  int64_t shard_end_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_TEXT_DATASET_H_
