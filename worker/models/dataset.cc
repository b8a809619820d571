#include "worker/models/dataset.h"

#include "absl/strings/str_cat.h"
#include "worker/models/deterministic_random.h"
#include "worker/models/fashion_mnist_dataset.h"
#include "worker/models/text_dataset.h"

namespace demod {

Dataset::~Dataset() = default;

Batch Dataset::NextTrainBatch(int64_t batch_size, at::Device device) {
  return TrainBatch(next_step_++, batch_size, device);
}

absl::StatusOr<std::unique_ptr<Dataset>> OpenDataset(const std::string& kind,
                                                     const std::string& data_dir,
                                                     int64_t context_length, uint64_t seed) {
  if (kind == "sotu") {
    absl::StatusOr<std::unique_ptr<TextDataset>> text =
        TextDataset::Open(data_dir + "/sotu", context_length, seed);
    if (!text.ok()) return text.status();
    return std::unique_ptr<Dataset>(std::move(*text));
  }
  if (kind == "fashion-mnist") {
    absl::StatusOr<std::unique_ptr<FashionMnistDataset>> images =
        FashionMnistDataset::Open(data_dir + "/fashion-mnist", seed);
    if (!images.ok()) return images.status();
    return std::unique_ptr<Dataset>(std::move(*images));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown data set '", kind, "' (expected sotu or fashion-mnist)"));
}

uint64_t BatchSeed(uint64_t seed, int rank, int64_t step) {
  return MixSeed(MixSeed(seed, static_cast<uint64_t>(rank)), static_cast<uint64_t>(step));
}

}  // namespace demod
