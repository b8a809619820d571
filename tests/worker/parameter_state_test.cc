#include "worker/parameter_state.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/scoped_temp_dir.h"
#include "worker/checkpoint.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

std::vector<NamedTensor> Tensors(double scale) {
  return {{"w", at::arange(12, at::kFloat).view({3, 4}) * scale},
          {"b", at::arange(5, at::kFloat).to(at::kBFloat16) * scale}};
}

TEST(ParameterStateTest, RoundTripCopiesInPlace) {
  const std::vector<NamedTensor> source = Tensors(1.5);
  std::vector<NamedTensor> target = Tensors(0);
  const at::Tensor w_before = target[0].second;
  ASSERT_TRUE(LoadTensors(SerializeTensors(source), target).ok());
  EXPECT_TRUE(target[0].second.equal(source[0].second));
  EXPECT_TRUE(target[1].second.equal(source[1].second));
  EXPECT_EQ(target[0].second.data_ptr(), w_before.data_ptr());  // the model's own storage
  EXPECT_EQ(Fingerprint(target), Fingerprint(source));
}

TEST(ParameterStateTest, FingerprintSeesOneBit) {
  std::vector<NamedTensor> a = Tensors(1);
  const uint64_t before = Fingerprint(a);
  a[0].second.view(-1)[7] = std::nextafter(7.0f, 8.0f);
  EXPECT_NE(Fingerprint(a), before);
}

TEST(ParameterStateTest, MismatchesAreRefusedAndChangeNothing) {
  const std::string bytes = SerializeTensors(Tensors(2));
  std::vector<NamedTensor> renamed = Tensors(0);
  renamed[1].first = "bias";
  absl::Status s = LoadTensors(bytes, renamed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'b'"));
  EXPECT_EQ(renamed[0].second.sum().item<float>(), 0);  // the first tensor was not written

  std::vector<NamedTensor> reshaped = {{"w", at::zeros({4, 3})},
                                       {"b", at::zeros({5}, at::kBFloat16)}};
  EXPECT_EQ(LoadTensors(bytes, reshaped).code(), absl::StatusCode::kInvalidArgument);

  std::string flipped = bytes;
  flipped[20] ^= 1;
  EXPECT_EQ(LoadTensors(flipped, Tensors(0)).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(LoadTensors(bytes.substr(0, 10), Tensors(0)).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(LoadTensors("", Tensors(0)).code(), absl::StatusCode::kDataLoss);
}

TEST(CheckpointTest, SaveLoadAndCorruption) {
  const ScopedTempDir scratch("demod-checkpoint");
  const std::string dir = scratch.path() + "/nested";
  absl::StatusOr<std::optional<Checkpoint>> none = LoadCheckpoint(dir);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  Checkpoint saved{"run-7", 42, SerializeTensors(Tensors(3)), SerializeTensors(Tensors(4))};
  ASSERT_TRUE(SaveCheckpoint(dir, saved).ok());
  saved.step = 43;  // a second save replaces the first
  ASSERT_TRUE(SaveCheckpoint(dir, saved).ok());
  absl::StatusOr<std::optional<Checkpoint>> loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->run_id, "run-7");
  EXPECT_EQ((*loaded)->step, 43);
  EXPECT_EQ((*loaded)->parameters, saved.parameters);
  EXPECT_EQ((*loaded)->momentum, saved.momentum);

  FILE* f = fopen((dir + "/checkpoint.bin").c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  fseek(f, 30, SEEK_SET);
  fputc('X', f);
  fclose(f);
  absl::StatusOr<std::optional<Checkpoint>> corrupt = LoadCheckpoint(dir);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(corrupt.status().message(), HasSubstr("checkpoint.bin"));
}

}  // namespace
}  // namespace demod
