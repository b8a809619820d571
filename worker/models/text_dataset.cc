#include "worker/models/text_dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/deterministic_random.h"

namespace demod {

absl::StatusOr<std::unique_ptr<TextDataset>> TextDataset::Open(const std::string& dir,
                                                               int64_t context_length,
                                                               uint64_t seed) {
  if (context_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("text data set: context length must be >= 1, got ", context_length));
  }
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file() && it->path().extension() == ".txt") files.push_back(it->path());
  }
  if (files.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no .txt files in ", dir, ": run scripts/fetch_data.sh DATA_DIR first"));
  }
  // Byte-wise, like `LC_ALL=C sort`, so the stream is the same under every locale.
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) {
    return a.filename().string() < b.filename().string();
  });
  std::string bytes;
  for (const std::filesystem::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream content;
    content << in.rdbuf();
    if (!in) return absl::DataLossError(absl::StrCat("cannot read ", f.string()));
    bytes += content.str();
  }
  const int64_t n = static_cast<int64_t>(bytes.size());
  const int64_t validation = n / 20;
  if (validation < context_length + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text data set ", dir, ": ", n, " bytes are too few for context ", context_length,
        " (the 5% validation split must hold one sample of context + 1 bytes)"));
  }
  return std::unique_ptr<TextDataset>(
      new TextDataset(std::move(bytes), static_cast<int64_t>(files.size()), context_length, seed));
}

TextDataset::TextDataset(std::string bytes, int64_t files, int64_t context_length, uint64_t seed)
    : bytes_(std::move(bytes)),
      files_(files),
      context_(context_length),
      seed_(seed),
      validation_begin_(int64_t(bytes_.size()) - int64_t(bytes_.size()) / 20),
      shard_end_(validation_begin_) {}

absl::Status TextDataset::Shard(int rank, int world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard: need 0 <= rank < world size, got rank ", rank, " of ", world_size));
  }
  const int64_t begin = validation_begin_ * rank / world_size;
  const int64_t end = validation_begin_ * (rank + 1) / world_size;
  if (end - begin < context_ + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", rank, " of ", world_size, ": ", end - begin,
                     " training bytes cannot hold one sample of ", context_ + 1, " bytes"));
  }
  rank_ = rank;
  world_size_ = world_size;
  shard_begin_ = begin;
  shard_end_ = end;
  return absl::OkStatus();
}

Batch TextDataset::Windows(const std::vector<int64_t>& offsets, at::Device device) const {
  const int64_t b = static_cast<int64_t>(offsets.size()), w = context_ + 1;
  at::Tensor windows = at::empty({b, w}, at::kLong);
  int64_t* out = windows.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < w; ++j) {
      out[i * w + j] = static_cast<unsigned char>(bytes_[offsets[i] + j]);
    }
  }
  windows = windows.to(device);
  return Batch{windows.slice(1, 0, context_), windows.slice(1, 1, w), b * context_};
}

Batch TextDataset::TrainBatch(int64_t step, int64_t batch_size, at::Device device) {
  SplitMix64 rng(BatchSeed(seed_, rank_, step));
  const int64_t starts = shard_end_ - shard_begin_ - context_;  // >= 1, checked by Shard
  std::vector<int64_t> offsets(static_cast<size_t>(batch_size));
  for (int64_t& o : offsets) o = shard_begin_ + rng.Below(starts);
  return Windows(offsets, device);
}

Batch TextDataset::ValidationBatch(int64_t batch_size, at::Device device) {
  const int64_t last = int64_t(bytes_.size()) - (context_ + 1);  // the last window's start
  const int64_t span = last - validation_begin_;
  std::vector<int64_t> offsets(static_cast<size_t>(batch_size));
  for (int64_t i = 0; i < batch_size; ++i) {
    offsets[i] = validation_begin_ + (batch_size > 1 ? span * i / (batch_size - 1) : 0);
  }
  return Windows(offsets, device);
}

std::string TextDataset::Describe() const {
  return absl::StrCat("text: ", files_, " files, ", bytes_.size(), " bytes (", train_bytes(),
                      " train, ", validation_bytes(), " validation), context ", context_,
                      ", shard ", rank_, "/", world_size_, " = bytes [", shard_begin_, ", ",
                      shard_end_, ")");
}

}  // namespace demod
