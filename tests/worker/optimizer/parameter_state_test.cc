#include "worker/optimizer/parameter_state.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace demod
