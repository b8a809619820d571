#include "common/payload_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/aggregation.h"
#include "common/byte_coding.h"
#include "common/crc32c.h"
#include "common/sign_mean.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Offsets and sizes from docs/wire-format.md, restated so that a change to the format breaks
// these tests rather than passing silently.
constexpr size_t kLengthOffset = 6;
constexpr size_t kFrameHeaderBytes = 14;
constexpr size_t kEncodingOffset = 14;
constexpr size_t kPayloadHeaderBytes = 27;
constexpr size_t kPayloadTensorHeaderBytes = 8;
constexpr size_t kAggregateHeaderBytes = 27;  // before the contributor ids
constexpr size_t kCrcBytes = 4;

constexpr ValueEncoding kAllEncodings[] = {ValueEncoding::kFloat32, ValueEncoding::kBFloat16,
                                           ValueEncoding::kFloat16, ValueEncoding::kSign};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t target;
  int64_t topk;
};

LayoutTable MakeTable(const std::vector<TensorSpec>& specs) {
  LayoutTable table;
  for (const TensorSpec& spec : specs) {
    table.push_back({spec.name, ValueOrStop(MakeChunkLayout(spec.shape, spec.target, spec.topk))});
  }
  return table;
}

// A valid payload: topk distinct sorted indices per chunk, normally distributed values.
StepPayload RandomPayload(const LayoutTable& table, ValueEncoding encoding, int64_t step,
                          uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1e-3f);
  StepPayload payload;
  payload.step = step;
  payload.encoding = encoding;
  for (const NamedLayout& named : table) {
    const ChunkLayout& layout = named.layout;
    SparseTensor tensor;
    for (int64_t c = 0; c < layout.num_chunks(); ++c) {
      std::vector<uint32_t> chosen;
      std::uniform_int_distribution<uint32_t> pick(0, layout.chunk_size() - 1);
      while (chosen.size() < static_cast<size_t>(layout.topk)) {
        const uint32_t index = layout.topk * 2 > layout.chunk_size()
                                   ? static_cast<uint32_t>(chosen.size())
                                   : pick(rng);
        if (std::find(chosen.begin(), chosen.end(), index) == chosen.end()) {
          chosen.push_back(index);
        }
      }
      std::sort(chosen.begin(), chosen.end());
      for (uint32_t index : chosen) {
        tensor.indices.push_back(index);
        tensor.values.push_back(normal(rng));
      }
    }
    payload.tensors.push_back(std::move(tensor));
  }
  return payload;
}

// Rewrites the length field and the CRC so that a deliberately edited message passes the frame
// checks and reaches the checks behind them.
void Reseal(std::string* bytes) {
  EncodeU64(&(*bytes)[kLengthOffset], bytes->size());
  const size_t body_end = bytes->size() - kCrcBytes;
  EncodeU32(&(*bytes)[body_end], Crc32c(absl::string_view(*bytes).substr(0, body_end)));
}

std::string EncodeOrDie(const StepPayload& payload, const LayoutTable& table) {
  absl::StatusOr<std::string> bytes = EncodeStepPayload(payload, table);
  EXPECT_OK(bytes);
  return bytes.ok() ? *bytes : std::string();
}

uint32_t FloatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

TEST(IndexWidthTest, SmallestUnsignedThatHoldsEveryIndex) {
  EXPECT_EQ(IndexWidth(1), 1);
  EXPECT_EQ(IndexWidth(64), 1);
  EXPECT_EQ(IndexWidth(256), 1);  // indices 0..255
  EXPECT_EQ(IndexWidth(257), 2);
  EXPECT_EQ(IndexWidth(4096), 2);
  EXPECT_EQ(IndexWidth(65536), 2);
  EXPECT_EQ(IndexWidth(65537), 4);
  EXPECT_EQ(IndexWidth(int64_t{1} << 32), 4);
}

TEST(CountWidthTest, CountsMayEqualTheChunkSize) {
  EXPECT_EQ(CountWidth(1), 1);
  EXPECT_EQ(CountWidth(255), 1);
  EXPECT_EQ(CountWidth(256), 2);  // a full chunk of 256 holds 256 entries
  EXPECT_EQ(CountWidth(4096), 2);
  EXPECT_EQ(CountWidth(65535), 2);
  EXPECT_EQ(CountWidth(65536), 4);
  EXPECT_EQ(CountWidth(70000), 4);
}

// The whole byte layout of a small payload, as docs/wire-format.md draws it.
TEST(PayloadFormatTest, ExactBytesOfASmallPayload) {
  const LayoutTable table = MakeTable({{"b", {4}, 4, 2}});
  StepPayload payload;
  payload.step = 5;
  payload.encoding = ValueEncoding::kFloat32;
  payload.tensors = {{{1, 3}, {1.0f, -2.0f}}};
  const std::string bytes = EncodeOrDie(payload, table);

  std::string expected("DMP1\x04\x00", 6);
  PutU64(&expected, 49);                                           // total length
  expected += std::string("\x00", 1);                              // encoding f32
  expected += std::string("\x05\x00\x00\x00\x00\x00\x00\x00", 8);  // step
  expected += std::string("\x01\x00\x00\x00", 4);                  // tensor count
  expected += std::string("\x01\x00\x00\x00\x02\x00\x00\x00", 8);  // num_chunks, topk
  expected += std::string("\x01\x03", 2);                          // indices, 1 byte each
  expected += std::string("\x00\x00\x80\x3F\x00\x00\x00\xC0", 8);  // 1.0f, -2.0f
  PutU32(&expected, Crc32c(expected));
  EXPECT_EQ(bytes, expected);
  EXPECT_EQ(bytes.size(), 49u);
}

TEST(PayloadFormatTest, SignBitsArePackedLeastSignificantFirst) {
  const LayoutTable table = MakeTable({{"s", {10}, 10, 10}});
  StepPayload payload;
  payload.encoding = ValueEncoding::kSign;
  payload.tensors = {{{0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
                      {0.5f, -0.1f, 0.0f, -3.0f, 2.0f, 1.0f, 1.0f, -1.0f, -1.0f, 1.0f}}};
  const std::string bytes = EncodeOrDie(payload, table);
  // Header, tensor header, 2 bytes of sign bits, CRC: k equals the chunk size, so the indices
  // (0 .. 9) are implicit.
  ASSERT_EQ(bytes.size(), kPayloadHeaderBytes + kPayloadTensorHeaderBytes + 2 + kCrcBytes);
  const size_t signs = kPayloadHeaderBytes + kPayloadTensorHeaderBytes;
  EXPECT_EQ(static_cast<unsigned char>(bytes[signs]), 0b10001010);
  EXPECT_EQ(static_cast<unsigned char>(bytes[signs + 1]), 0b00000001);

  absl::StatusOr<StepPayload> decoded = DecodeStepPayload(bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_THAT(decoded->tensors[0].values, testing::ElementsAre(1, -1, 1, -1, 1, 1, 1, -1, -1, 1));
}

// A dense exchange (every coefficient of every chunk: the AdamW baseline) costs only its
// values: the indices can only be 0 .. S-1 and are left out, in payloads and aggregates.
TEST(PayloadFormatTest, FullChunksCarryNoIndices) {
  const LayoutTable table = MakeTable({{"w", {8, 8}, 4, 16}, {"b", {8}, 4, 4}});
  StepPayload payload;
  payload.step = 3;
  payload.encoding = ValueEncoding::kFloat32;
  for (const NamedLayout& t : table) {
    SparseTensor tensor;
    for (int64_t c = 0; c < t.layout.num_chunks(); ++c) {
      for (int64_t i = 0; i < t.layout.chunk_size(); ++i) {
        tensor.indices.push_back(static_cast<uint32_t>(i));
        tensor.values.push_back(static_cast<float>(c * 100 + i));
      }
    }
    payload.tensors.push_back(tensor);
  }
  const std::string bytes = EncodeOrDie(payload, table);
  EXPECT_EQ(bytes.size(),
            kPayloadHeaderBytes + 2 * kPayloadTensorHeaderBytes + (64 + 8) * 4 + kCrcBytes);
  absl::StatusOr<StepPayload> decoded = DecodeStepPayload(bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->tensors[0].indices, payload.tensors[0].indices);
  EXPECT_EQ(decoded->tensors[1].values, payload.tensors[1].values);

  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{7, &payload}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  absl::StatusOr<std::string> aggregate_bytes = EncodeStepAggregate(*aggregate, table);
  ASSERT_TRUE(aggregate_bytes.ok()) << aggregate_bytes.status();
  // Header, one contributor, tensor count, per tensor its chunk count and counts, 4-byte values.
  EXPECT_EQ(aggregate_bytes->size(),
            kAggregateHeaderBytes + 4 + 4 + (4 + 4 * 1) + (4 + 2 * 1) + (64 + 8) * 4 + kCrcBytes);
  absl::StatusOr<StepAggregate> back = DecodeStepAggregate(*aggregate_bytes, table);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->tensors[0].indices, aggregate->tensors[0].indices);
  EXPECT_EQ(back->tensors[0].values, aggregate->tensors[0].values);
}

struct WidthCase {
  const char* label;
  TensorSpec spec;
  int index_width;
};

class PayloadRoundTripTest : public ::testing::TestWithParam<std::tuple<ValueEncoding, WidthCase>> {
};

TEST_P(PayloadRoundTripTest, DecodesWhatWasEncoded) {
  const auto& [encoding, width_case] = GetParam();
  // A second, small tensor checks that tensors follow each other without padding.
  const LayoutTable table = MakeTable({width_case.spec, {"bias", {96}, 64, 7}});
  ASSERT_EQ(IndexWidth(table[0].layout.chunk_size()), width_case.index_width);
  const StepPayload payload = RandomPayload(table, encoding, 123456789012LL, 42);
  const std::string bytes = EncodeOrDie(payload, table);

  size_t expected_size = kPayloadHeaderBytes + kCrcBytes;
  for (const NamedLayout& named : table) {
    const int64_t n = named.layout.num_selected();
    expected_size += kPayloadTensorHeaderBytes + n * IndexWidth(named.layout.chunk_size()) +
                     EncodedValueBytes(encoding, n);
  }
  EXPECT_EQ(bytes.size(), expected_size);

  absl::StatusOr<StepPayload> decoded = DecodeStepPayload(bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->step, payload.step);
  EXPECT_EQ(decoded->encoding, encoding);
  ASSERT_EQ(decoded->tensors.size(), table.size());
  for (size_t t = 0; t < table.size(); ++t) {
    EXPECT_EQ(decoded->tensors[t].indices, payload.tensors[t].indices);
    ASSERT_EQ(decoded->tensors[t].values.size(), payload.tensors[t].values.size());
    for (size_t i = 0; i < payload.tensors[t].values.size(); ++i) {
      ASSERT_EQ(FloatBits(decoded->tensors[t].values[i]),
                FloatBits(QuantizeValue(encoding, payload.tensors[t].values[i])))
          << "tensor " << t << " entry " << i;
    }
  }
  // Encoding the decoded payload reproduces the same bytes: quantization is idempotent.
  EXPECT_EQ(EncodeOrDie(*decoded, table), bytes);
}

INSTANTIATE_TEST_SUITE_P(
    EncodingsTimesIndexWidths, PayloadRoundTripTest,
    ::testing::Combine(
        ::testing::ValuesIn(kAllEncodings),
        ::testing::Values(WidthCase{"chunk64", {"h.0.attn.weight", {128, 64}, 8, 5}, 1},
                          WidthCase{"chunk256", {"emb", {512}, 256, 32}, 1},
                          WidthCase{"chunk4096", {"h.0.fc.weight", {128, 192}, 64, 32}, 2},
                          WidthCase{"chunk65536", {"big", {65536}, 65536, 20}, 2},
                          WidthCase{"chunk65537", {"prime", {65537}, 70000, 9}, 4},
                          WidthCase{"chunk70000", {"wide", {1, 70000}, 70000, 33}, 4})),
    [](const auto& info) {
      return absl::StrCat(ValueEncodingName(std::get<0>(info.param)), "_",
                          std::get<1>(info.param).label);
    });

TEST(PayloadRoundTripTest, NegativeStepAndExtremeValues) {
  const LayoutTable table = MakeTable({{"w", {8}, 8, 8}});
  StepPayload payload;
  payload.step = -3;
  payload.tensors = {{{0, 1, 2, 3, 4, 5, 6, 7},
                      {0.0f, -0.0f, std::numeric_limits<float>::max(),
                       -std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                       std::numeric_limits<float>::denorm_min(), 1e-40f, -65520.0f}}};
  for (ValueEncoding encoding : kAllEncodings) {
    payload.encoding = encoding;
    absl::StatusOr<StepPayload> decoded = DecodeStepPayload(EncodeOrDie(payload, table), table);
    ASSERT_TRUE(decoded.ok()) << ValueEncodingName(encoding) << ": " << decoded.status();
    EXPECT_EQ(decoded->step, -3);
    for (size_t i = 0; i < 8; ++i) {
      const float got = decoded->tensors[0].values[i];
      EXPECT_TRUE(std::isfinite(got)) << ValueEncodingName(encoding) << " " << i;
      EXPECT_EQ(FloatBits(got), FloatBits(QuantizeValue(encoding, payload.tensors[0].values[i])));
    }
  }
}

TEST(PayloadRoundTripTest, EmptyTable) {
  const LayoutTable table;
  StepPayload payload;
  payload.step = 1;
  const std::string bytes = EncodeOrDie(payload, table);
  EXPECT_EQ(bytes.size(), kPayloadHeaderBytes + kCrcBytes);
  absl::StatusOr<StepPayload> decoded = DecodeStepPayload(bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->tensors.empty());
}

// ---- Validation of in-memory payloads (shared by the encoder and the decoder) ----

class PayloadValidationTest : public ::testing::Test {
 protected:
  // 64 x 512 with chunks of 64 x 64: eight chunks of 4096, as in the format's example message.
  PayloadValidationTest()
      : table_(MakeTable({{"blocks.3.fc1.weight", {64, 512}, 64, 3}, {"bias", {16}, 8, 2}})),
        payload_(RandomPayload(table_, ValueEncoding::kFloat32, 9, 7)) {}

  // Expects both ValidateStepPayload and EncodeStepPayload to reject payload_ with `message`.
  void ExpectInvalid(absl::string_view message) {
    const absl::Status status = ValidateStepPayload(payload_, table_);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), HasSubstr(std::string(message)));
    const absl::StatusOr<std::string> encoded = EncodeStepPayload(payload_, table_);
    EXPECT_EQ(encoded.status(), status);
  }

  SparseTensor& fc1() { return payload_.tensors[0]; }

  LayoutTable table_;
  StepPayload payload_;
};

TEST_F(PayloadValidationTest, ValidPayloadPasses) {
  EXPECT_OK(ValidateStepPayload(payload_, table_));
}

TEST_F(PayloadValidationTest, TensorCount) {
  payload_.tensors.pop_back();
  ExpectInvalid("payload has 1 tensors, table has 2");
}

TEST_F(PayloadValidationTest, EntryCount) {
  fc1().indices.pop_back();
  ExpectInvalid("tensor 'blocks.3.fc1.weight': 23 indices and 24 values, expected 24");
  fc1().indices.push_back(4000);
  fc1().values.pop_back();
  ExpectInvalid("tensor 'blocks.3.fc1.weight': 24 indices and 23 values, expected 24");
}

TEST_F(PayloadValidationTest, IndexOutOfRange) {
  fc1().indices[7 * 3 + 2] = 4101;  // last entry of chunk 7
  ExpectInvalid("tensor 'blocks.3.fc1.weight' chunk 7: index 4101 out of range for chunk of 4096");
}

TEST_F(PayloadValidationTest, DuplicateIndex) {
  fc1().indices[2 * 3 + 0] = 10;
  fc1().indices[2 * 3 + 1] = 10;
  fc1().indices[2 * 3 + 2] = 11;
  ExpectInvalid("tensor 'blocks.3.fc1.weight': duplicate index 10 in chunk 2");
}

TEST_F(PayloadValidationTest, IndicesNotIncreasing) {
  payload_.tensors[1].indices = {3, 1, 0, 2};
  ExpectInvalid("tensor 'bias': indices not increasing in chunk 0 (1 after 3)");
}

TEST_F(PayloadValidationTest, NonFiniteValues) {
  fc1().values[4] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid("tensor 'blocks.3.fc1.weight' chunk 1: non-finite value nan");
  fc1().values[4] = -std::numeric_limits<float>::infinity();
  ExpectInvalid("tensor 'blocks.3.fc1.weight' chunk 1: non-finite value -inf");
}

TEST_F(PayloadValidationTest, InvalidEncodingEnum) {
  payload_.encoding = static_cast<ValueEncoding>(9);
  ExpectInvalid("invalid value encoding 9");
}

TEST_F(PayloadValidationTest, TableBeyondTheFormatsLimits) {
  ChunkLayout huge;
  huge.matrix_shape = {int64_t{1} << 32};
  huge.chunk_grid = {1};
  huge.chunk_cols = int64_t{1} << 32;
  huge.topk = 1;
  table_.push_back({"huge", huge});
  payload_.tensors.push_back({{0}, {1.0f}});
  ExpectInvalid("tensor 'huge': chunk of 4294967296 coefficients outside the wire format's range");
}

// ---- Decoding untrusted bytes ----

class PayloadDecodeTest : public ::testing::Test {
 protected:
  PayloadDecodeTest()
      : table_(MakeTable({{"h.0.fc.weight", {128, 192}, 64, 4}, {"bias", {40}, 8, 3}})),
        payload_(RandomPayload(table_, ValueEncoding::kFloat16, 77, 3)),
        bytes_(EncodeOrDie(payload_, table_)) {}

  absl::Status Decode(absl::string_view bytes) { return DecodeStepPayload(bytes, table_).status(); }

  // Offset of tensor 0's first index: after the header and the tensor's own header.
  static constexpr size_t kFirstIndex = kPayloadHeaderBytes + kPayloadTensorHeaderBytes;

  LayoutTable table_;
  StepPayload payload_;
  std::string bytes_;
};

TEST_F(PayloadDecodeTest, EveryTruncationFailsCleanly) {
  for (size_t n = 0; n < bytes_.size(); ++n) {
    const absl::Status status = Decode(absl::string_view(bytes_).substr(0, n));
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << n << ": " << status;
    ASSERT_THAT(std::string(status.message()), StartsWith("truncated payload: ")) << n;
  }
  EXPECT_THAT(Decode("").message(), HasSubstr("0 bytes, the smallest payload is 31"));
  EXPECT_THAT(Decode(absl::string_view(bytes_).substr(0, 100)).message(),
              HasSubstr(absl::StrCat("100 bytes, header declares ", bytes_.size())));
}

TEST_F(PayloadDecodeTest, EveryFlippedByteIsDetected) {
  for (size_t i = 0; i < bytes_.size(); ++i) {
    std::string corrupt = bytes_;
    corrupt[i] ^= 0x20;
    const absl::Status status = Decode(corrupt);
    ASSERT_FALSE(status.ok()) << "byte " << i;
    if (i >= kFrameHeaderBytes) {
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << i << ": " << status;
      ASSERT_THAT(status.message(), HasSubstr("payload checksum mismatch")) << i;
    }
  }
}

TEST_F(PayloadDecodeTest, TrailingBytes) {
  const absl::Status appended = Decode(bytes_ + "x");
  EXPECT_EQ(appended.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(appended.message(), HasSubstr("trailing bytes after payload"));

  // An extra byte inside a correctly framed message: only the parser can see it.
  std::string inner = bytes_;
  inner.insert(inner.size() - kCrcBytes, 1, '\0');
  Reseal(&inner);
  EXPECT_THAT(Decode(inner).message(),
              HasSubstr("trailing bytes after payload: 1 bytes after the last tensor"));
}

TEST_F(PayloadDecodeTest, UnknownVersion) {
  std::string bytes = bytes_;
  bytes[4] = 1;  // version 1 spelled out every index, even of full chunks
  const absl::Status status = Decode(bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("unsupported payload format version 1; this build reads version 4"));
}

TEST_F(PayloadDecodeTest, BadMagic) {
  std::string bytes = bytes_;
  bytes.replace(0, 4, "XYZ!");
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("not a step payload: bad magic 'XYZ!'"));
  bytes.replace(0, 4, "DMA1");
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("expected a step payload, got a step aggregate"));
}

TEST_F(PayloadDecodeTest, UnknownValueEncoding) {
  std::string bytes = bytes_;
  bytes[kEncodingOffset] = 9;
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("unknown value encoding 9 in payload; valid: "));
}

TEST_F(PayloadDecodeTest, TableMismatch) {
  const LayoutTable fewer(table_.begin(), table_.begin() + 1);
  EXPECT_THAT(DecodeStepPayload(bytes_, fewer).status().message(),
              HasSubstr("payload has 2 tensors, table has 1"));

  LayoutTable other_k = table_;
  other_k[0].layout.topk = 5;
  const absl::Status status = DecodeStepPayload(bytes_, other_k).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("tensor 'h.0.fc.weight': payload has 6 chunks of k=4, "
                                          "table expects 6 chunks of k=5"));
}

TEST_F(PayloadDecodeTest, IndexOutOfRange) {
  // Chunks of 64 x 64 = 4096 take 2-byte indices; 4101 = 0x1005.
  std::string bytes = bytes_;
  EncodeU16(&bytes[kFirstIndex + 2 * 3], 4101);  // the last index of chunk 0
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr("tensor 'h.0.fc.weight' chunk 0: index 4101 out of range for chunk of "
                        "4096"));
}

TEST_F(PayloadDecodeTest, DuplicateAndDecreasingIndices) {
  std::string bytes = bytes_;
  EncodeU16(&bytes[kFirstIndex + 2 * 5], payload_.tensors[0].indices[4]);  // chunk 1
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr(absl::StrCat("tensor 'h.0.fc.weight': duplicate index ",
                                     payload_.tensors[0].indices[4], " in chunk 1")));
  bytes = bytes_;
  EncodeU16(&bytes[kFirstIndex + 2 * 5], 0);
  EncodeU16(&bytes[kFirstIndex + 2 * 4], 1);
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr("tensor 'h.0.fc.weight': indices not increasing in chunk 1 (0 after 1)"));
}

TEST_F(PayloadDecodeTest, NonFiniteHalfValue) {
  std::string bytes = bytes_;
  const size_t first_value = kFirstIndex + 2 * payload_.tensors[0].indices.size();
  EncodeU16(&bytes[first_value + 2 * 9], 0x7C00);  // +inf, entry 9 is in chunk 2
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr("tensor 'h.0.fc.weight' chunk 2: non-finite value inf"));
}

TEST(PayloadDecodeSignTest, NonzeroPaddingBits) {
  const LayoutTable table = MakeTable({{"g", {96}, 48, 5}});  // 10 signs: 6 padding bits
  const StepPayload payload = RandomPayload(table, ValueEncoding::kSign, 1, 1);
  std::string bytes = EncodeOrDie(payload, table);
  ASSERT_TRUE(DecodeStepPayload(bytes, table).ok());
  bytes[bytes.size() - kCrcBytes - 1] |= 0x80;
  Reseal(&bytes);
  EXPECT_THAT(DecodeStepPayload(bytes, table).status().message(),
              HasSubstr("tensor 'g': nonzero padding bits after the last sign"));
}

// Bytes that get past the CRC (a resealed mutation) are either rejected as INVALID_ARGUMENT or
// decode to a payload that encodes back to exactly those bytes: the encoding is canonical.
TEST_F(PayloadDecodeTest, ResealedMutationsAreRejectedOrCanonical) {
  for (ValueEncoding encoding : kAllEncodings) {
    payload_.encoding = encoding;
    const std::string original = EncodeOrDie(payload_, table_);
    std::mt19937 rng(static_cast<uint32_t>(encoding));
    std::uniform_int_distribution<size_t> offset(kEncodingOffset, original.size() - kCrcBytes - 1);
    int accepted = 0;
    for (int trial = 0; trial < 3000; ++trial) {
      std::string bytes = original;
      for (int flips = 1 + trial % 3; flips > 0; --flips) {
        bytes[offset(rng)] = static_cast<char>(rng());
      }
      Reseal(&bytes);
      absl::StatusOr<StepPayload> decoded = DecodeStepPayload(bytes, table_);
      if (decoded.ok()) {
        ++accepted;
        ASSERT_EQ(EncodeOrDie(*decoded, table_), bytes) << "trial " << trial;
      } else {
        ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << decoded.status();
      }
    }
    EXPECT_GT(accepted, 0) << ValueEncodingName(encoding);  // value bytes: mostly still valid
  }
}

// Counts from the table are checked against the bytes present before anything is allocated.
TEST(PayloadDecodeLimitsTest, HugeTableDoesNotAllocate) {
  ChunkLayout huge;
  const int64_t max = std::numeric_limits<uint32_t>::max();
  huge.matrix_shape = {1};  // not read by the codec
  huge.chunk_grid = {max};
  huge.chunk_cols = max;
  huge.topk = max;
  const LayoutTable table = {{"huge", huge}};
  std::string bytes("DMP1\x04\x00", 6);
  PutU64(&bytes, 0);
  PutU8(&bytes, 0);
  PutU64(&bytes, 1);
  PutU32(&bytes, 1);
  PutU32(&bytes, static_cast<uint32_t>(max));
  PutU32(&bytes, static_cast<uint32_t>(max));
  PutU32(&bytes, 0);
  Reseal(&bytes);
  const absl::Status status = DecodeStepPayload(bytes, table).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("truncated payload: tensor 'huge' needs "));
}

// ---- Aggregates ----

// An aggregate whose chunks hold between 0 and chunk_size entries.
StepAggregate RandomAggregate(const LayoutTable& table, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  StepAggregate aggregate;
  aggregate.step = 31;
  aggregate.contributors = {0, 3, 4, 17};
  for (const NamedLayout& named : table) {
    const ChunkLayout& layout = named.layout;
    AggregateTensor tensor;
    tensor.chunk_offsets.push_back(0);
    std::uniform_int_distribution<int64_t> count_dist(
        0, std::min<int64_t>(layout.chunk_size(), 4 * layout.topk));
    for (int64_t c = 0; c < layout.num_chunks(); ++c) {
      const int64_t count = c == 0 ? layout.chunk_size() : count_dist(rng);  // one full chunk
      std::vector<uint32_t> all(layout.chunk_size());
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      all.resize(count);
      std::sort(all.begin(), all.end());
      for (uint32_t index : all) {
        tensor.indices.push_back(index);
        tensor.values.push_back(normal(rng));
      }
      tensor.chunk_offsets.push_back(tensor.indices.size());
    }
    aggregate.tensors.push_back(std::move(tensor));
  }
  return aggregate;
}

class AggregateRoundTripTest : public ::testing::TestWithParam<WidthCase> {};

TEST_P(AggregateRoundTripTest, DecodesWhatWasEncoded) {
  const LayoutTable table = MakeTable({GetParam().spec, {"bias", {96}, 64, 7}});
  const StepAggregate aggregate = RandomAggregate(table, 5);
  absl::StatusOr<std::string> bytes = EncodeStepAggregate(aggregate, table);
  ASSERT_TRUE(bytes.ok()) << bytes.status();

  size_t expected_size = kAggregateHeaderBytes + 4 * aggregate.contributors.size() + 4 + kCrcBytes;
  for (size_t t = 0; t < table.size(); ++t) {
    const ChunkLayout& layout = table[t].layout;
    const size_t n = aggregate.tensors[t].indices.size();
    const bool full = n == static_cast<size_t>(layout.num_elements());  // indices implicit
    expected_size += 4 + layout.num_chunks() * CountWidth(layout.chunk_size()) +
                     n * ((full ? 0 : IndexWidth(layout.chunk_size())) + 4);
  }
  EXPECT_EQ(bytes->size(), expected_size);

  absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(*bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->step, aggregate.step);
  EXPECT_EQ(decoded->contributors, aggregate.contributors);
  ASSERT_EQ(decoded->tensors.size(), table.size());
  for (size_t t = 0; t < table.size(); ++t) {
    EXPECT_EQ(decoded->tensors[t].chunk_offsets, aggregate.tensors[t].chunk_offsets);
    EXPECT_EQ(decoded->tensors[t].indices, aggregate.tensors[t].indices);
    EXPECT_EQ(decoded->tensors[t].values, aggregate.tensors[t].values);  // f32: exact
  }
}

INSTANTIATE_TEST_SUITE_P(IndexAndCountWidths, AggregateRoundTripTest,
                         ::testing::Values(WidthCase{"chunk64", {"a", {128, 64}, 8, 5}, 1},
                                           WidthCase{"chunk255", {"c255", {510}, 255, 3}, 1},
                                           WidthCase{"chunk256", {"c256", {512}, 256, 3}, 1},
                                           WidthCase{"chunk4096", {"fc", {128, 192}, 64, 32}, 2},
                                           WidthCase{"chunk65536", {"big", {65536}, 65536, 20}, 2},
                                           WidthCase{
                                               "chunk65537", {"prime", {65537}, 70000, 9}, 4}),
                         [](const auto& info) { return std::string(info.param.label); });

// The bytes before the values of the small aggregate below: step 2, contributors {1, 6}, one
// tensor of two chunks of 4 holding 3 coefficients at indices 0, 2 and 3 of the first chunk.
std::string SmallAggregateHeader(uint64_t total_bytes, ValueEncoding encoding) {
  std::string header("DMA1\x04\x00", 6);
  PutU64(&header, total_bytes);
  PutU8(&header, static_cast<uint8_t>(encoding));
  PutU64(&header, 2);  // step
  PutU32(&header, 2);  // contributor count
  PutU32(&header, 1);
  PutU32(&header, 6);
  PutU32(&header, 1);                        // tensor count
  PutU32(&header, 2);                        // num_chunks
  header += std::string("\x03\x00", 2);      // per-chunk counts, u8
  header += std::string("\x00\x02\x03", 3);  // indices, u8
  return header;
}

TEST(AggregateFormatTest, ExactBytesOfASmallAggregate) {
  const LayoutTable table = MakeTable({{"b", {8}, 4, 2}});  // two chunks of 4
  StepAggregate aggregate;
  aggregate.step = 2;
  aggregate.contributors = {1, 6};
  aggregate.tensors = {{{0, 3, 3}, {0, 2, 3}, {0.5f, 1.0f, -1.0f}}};
  absl::StatusOr<std::string> bytes = EncodeStepAggregate(aggregate, table);
  ASSERT_TRUE(bytes.ok()) << bytes.status();

  std::string expected = SmallAggregateHeader(64, ValueEncoding::kFloat32);
  PutF32(&expected, 0.5f);
  PutF32(&expected, 1.0f);
  PutF32(&expected, -1.0f);
  PutU32(&expected, Crc32c(expected));
  EXPECT_EQ(*bytes, expected);
  EXPECT_EQ(bytes->size(), 64u);
}

// The means of bf16 (or f16) payloads travel in 2 bytes, exactly as AggregateStep rounded them.
TEST(AggregateFormatTest, HalfPrecisionValuesTakeTwoBytes) {
  const LayoutTable table = MakeTable({{"b", {8}, 4, 2}});
  StepAggregate aggregate;
  aggregate.step = 2;
  aggregate.contributors = {1, 6};
  aggregate.tensors = {{{0, 3, 3}, {0, 2, 3}, {0.5f, 1.0f, -1.0f}}};
  absl::StatusOr<std::string> f32 = EncodeStepAggregate(aggregate, table);
  ASSERT_TRUE(f32.ok()) << f32.status();
  for (ValueEncoding encoding : {ValueEncoding::kBFloat16, ValueEncoding::kFloat16}) {
    SCOPED_TRACE(ValueEncodingName(encoding));
    aggregate.encoding = encoding;
    absl::StatusOr<std::string> bytes = EncodeStepAggregate(aggregate, table);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(bytes->size(), f32->size() - 3 * 2);
    EXPECT_EQ((*bytes)[kFrameHeaderBytes], static_cast<char>(encoding));
    absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(*bytes, table);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->encoding, encoding);
    EXPECT_EQ(decoded->tensors[0].values, aggregate.tensors[0].values);
  }
}

TEST(AggregateFormatTest, ValuesMustBeExactInTheEncodingAndSignIsRefused) {
  const LayoutTable table = MakeTable({{"b", {8}, 4, 2}});
  StepAggregate aggregate;
  aggregate.contributors = {1};
  aggregate.tensors = {{{0, 1, 1}, {2}, {1.00390625f}}};  // 1 + 2^-8: 9 significant bits
  aggregate.encoding = ValueEncoding::kBFloat16;
  EXPECT_THAT(EncodeStepAggregate(aggregate, table).status().message(),
              HasSubstr("tensor 'b': a value is not exactly bf16"));
  aggregate.encoding = ValueEncoding::kFloat16;
  EXPECT_OK(EncodeStepAggregate(aggregate, table));  // f16 has 11 significant bits
  aggregate.encoding = ValueEncoding::kSign;
  EXPECT_THAT(
      EncodeStepAggregate(aggregate, table).status().message(),
      HasSubstr("aggregate value encoding 3 is not one of 0 (f32), 1 (bf16), 2 (f16), 4 (sign-"));
  aggregate.encoding = ValueEncoding::kSignMean;  // 1 + 2^-8 is no mean of signs
  EXPECT_THAT(EncodeStepAggregate(aggregate, table).status().message(),
              HasSubstr("tensor 'b': a value is not exactly sign-mean"));

  aggregate.encoding = ValueEncoding::kFloat32;
  std::string bytes = *EncodeStepAggregate(aggregate, table);
  bytes[kFrameHeaderBytes] = 3;
  Reseal(&bytes);
  EXPECT_THAT(DecodeStepAggregate(bytes, table).status().message(),
              HasSubstr("aggregate value encoding 3 is not one of"));
}

TEST(AggregateFormatTest, ASectionThatFailsLeavesTheOutputAsItWas) {
  const LayoutTable table = MakeTable({{"b", {8}, 4, 2}});
  const AggregateTensor good = {{0, 1, 2}, {2, 1}, {1.0f, -1.0f}};
  const AggregateTensor bad = {{0, 1, 2}, {2, 1}, {1.0f, 1.0f / 3.0f}};  // needs 3 contributors
  std::string out = "before";
  EXPECT_OK(AppendAggregateTensorSection(table[0], good, ValueEncoding::kSignMean, 2, &out));
  const std::string after_good = out;
  EXPECT_THAT(
      AppendAggregateTensorSection(table[0], bad, ValueEncoding::kSignMean, 2, &out).message(),
      HasSubstr("tensor 'b': a value is not exactly sign-mean"));
  EXPECT_EQ(out, after_good);
  EXPECT_OK(AppendAggregateTensorSection(table[0], bad, ValueEncoding::kSignMean, 3, &out));
}

// Means of signs travel as codes: contributors {1, 6} can give -1, 0 and 1 (codes 0, 1, 2), two
// bits each, packed least significant bit first.
TEST(AggregateFormatTest, ExactBytesOfSignMeans) {
  const LayoutTable table = MakeTable({{"b", {8}, 4, 2}});  // two chunks of 4
  StepAggregate aggregate;
  aggregate.step = 2;
  aggregate.encoding = ValueEncoding::kSignMean;
  aggregate.contributors = {1, 6};
  aggregate.tensors = {{{0, 3, 3}, {0, 2, 3}, {0.0f, 1.0f, -1.0f}}};
  absl::StatusOr<std::string> bytes = EncodeStepAggregate(aggregate, table);
  ASSERT_TRUE(bytes.ok()) << bytes.status();

  std::string expected = SmallAggregateHeader(53, ValueEncoding::kSignMean);
  PutU8(&expected, 0b00'10'01);  // codes 1 (0), 2 (1), 0 (-1)
  PutU32(&expected, Crc32c(expected));
  EXPECT_EQ(*bytes, expected);
  absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(*bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->encoding, ValueEncoding::kSignMean);
  EXPECT_EQ(decoded->tensors[0].values, aggregate.tensors[0].values);

  // A code beyond the table (3), and padding bits that are not zero, are refused.
  std::string bad = *bytes;
  bad[bad.size() - 5] = static_cast<char>(0b00'10'11);
  Reseal(&bad);
  EXPECT_THAT(DecodeStepAggregate(bad, table).status().message(),
              HasSubstr("tensor 'b': sign mean code 3, the table has 3"));
  bad = *bytes;
  bad[bad.size() - 5] = static_cast<char>(0b01'00'10'01);
  Reseal(&bad);
  EXPECT_THAT(DecodeStepAggregate(bad, table).status().message(),
              HasSubstr("nonzero padding bits after the last sign mean"));
  // Sign means need contributors to count.
  aggregate.contributors.clear();
  EXPECT_THAT(EncodeStepAggregate(aggregate, table).status().message(),
              HasSubstr("sign means of 0 contributors"));
  aggregate.contributors.resize(SignMeanTable::kMaxContributors + 1);
  std::iota(aggregate.contributors.begin(), aggregate.contributors.end(), 0);
  EXPECT_THAT(EncodeStepAggregate(aggregate, table).status().message(),
              HasSubstr("sign means of 257 contributors; they take 1 to 256"));
}

// Every mean P signs can give survives the round trip, for many P, in every position of the
// packed bits.
TEST(AggregateRoundTripTest, EverySignMeanOfUpTo40Contributors) {
  for (uint32_t p : {1u, 2u, 3u, 4u, 7u, 8u, 32u, 40u}) {
    SCOPED_TRACE(p);
    const SignMeanTable& means = SignMeanTable::For(p);
    const auto n = static_cast<int64_t>(means.size());
    const LayoutTable table = MakeTable({{"v", {n}, n, n}});  // one chunk, every entry
    StepAggregate aggregate;
    aggregate.encoding = ValueEncoding::kSignMean;
    aggregate.contributors.resize(p);
    std::iota(aggregate.contributors.begin(), aggregate.contributors.end(), 0);
    AggregateTensor tensor;
    tensor.chunk_offsets = {0, static_cast<uint64_t>(n)};
    for (uint32_t code = 0; code < n; ++code) {
      tensor.indices.push_back(code);
      tensor.values.push_back(means.value(static_cast<uint32_t>(n) - 1 - code));
    }
    aggregate.tensors = {tensor};
    absl::StatusOr<std::string> bytes = EncodeStepAggregate(aggregate, table);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(*bytes, table);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->tensors[0].values, tensor.values);
    aggregate.encoding = ValueEncoding::kFloat32;
    EXPECT_EQ(bytes->size() + static_cast<size_t>(4 * n - means.EncodedBytes(n)),
              EncodeStepAggregate(aggregate, table)->size());
  }
}

TEST(AggregateRoundTripTest, NoEntries) {
  const LayoutTable table = MakeTable({{"b", {8}, 4, 2}});
  StepAggregate aggregate;
  aggregate.tensors = {{{0, 0, 0}, {}, {}}};
  absl::StatusOr<std::string> bytes = EncodeStepAggregate(aggregate, table);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(*bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->contributors.empty());
  EXPECT_EQ(decoded->tensors[0].chunk_offsets, (std::vector<uint64_t>{0, 0, 0}));
}

class AggregateValidationTest : public ::testing::Test {
 protected:
  AggregateValidationTest()
      : table_(MakeTable({{"blocks.3.fc1.weight", {64, 512}, 64, 3}, {"bias", {8}, 4, 2}})),
        aggregate_(RandomAggregate(table_, 11)) {}

  void ExpectInvalid(absl::string_view message) {
    const absl::Status status = ValidateStepAggregate(aggregate_, table_);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), HasSubstr(std::string(message)));
    EXPECT_EQ(EncodeStepAggregate(aggregate_, table_).status(), status);
  }

  AggregateTensor& bias() { return aggregate_.tensors[1]; }

  LayoutTable table_;
  StepAggregate aggregate_;
};

TEST_F(AggregateValidationTest, ValidAggregatePasses) {
  EXPECT_OK(ValidateStepAggregate(aggregate_, table_));
}

TEST_F(AggregateValidationTest, Contributors) {
  aggregate_.contributors = {1, 4, 4};
  ExpectInvalid("duplicate contributor 4");
  aggregate_.contributors = {5, 2};
  ExpectInvalid("contributors not increasing: 2 after 5");
}

TEST_F(AggregateValidationTest, TensorCount) {
  aggregate_.tensors.pop_back();
  ExpectInvalid("aggregate has 1 tensors, table has 2");
}

TEST_F(AggregateValidationTest, ChunkOffsets) {
  bias() = {{0, 2, 4}, {0, 1, 0, 3}, {1, 2, 3, 4}};
  ASSERT_TRUE(ValidateStepAggregate(aggregate_, table_).ok());

  bias().chunk_offsets = {0, 4};
  ExpectInvalid("tensor 'bias': 2 chunk offsets, expected 3 (chunks + 1)");
  bias().chunk_offsets = {1, 2, 4};
  ExpectInvalid("tensor 'bias': chunk offsets start at 1, not 0");
  bias().chunk_offsets = {0, 2, 3};
  ExpectInvalid("tensor 'bias': chunk offsets end at 3, not at the 4 entries");
  bias().chunk_offsets = {0, 5, 4};
  ExpectInvalid("tensor 'bias': chunk offsets decrease at chunk 1");
}

TEST_F(AggregateValidationTest, ValuesAndIndicesDiffer) {
  bias() = {{0, 2, 4}, {0, 1, 0, 3}, {1, 2, 3}};
  ExpectInvalid("tensor 'bias': 4 indices but 3 values");
}

TEST_F(AggregateValidationTest, MoreEntriesThanTheChunkHolds) {
  bias() = {{0, 5, 5}, {0, 1, 2, 3, 3}, {1, 2, 3, 4, 5}};
  ExpectInvalid("tensor 'bias' chunk 0: 5 entries, more than the chunk's 4 coefficients");
}

TEST_F(AggregateValidationTest, EntryChecks) {
  bias() = {{0, 2, 4}, {0, 4, 0, 3}, {1, 2, 3, 4}};
  ExpectInvalid("tensor 'bias' chunk 0: index 4 out of range for chunk of 4");
  bias() = {{0, 2, 4}, {0, 1, 3, 3}, {1, 2, 3, 4}};
  ExpectInvalid("tensor 'bias': duplicate index 3 in chunk 1");
  bias() = {{0, 2, 4}, {0, 1, 3, 2}, {1, 2, 3, 4}};
  ExpectInvalid("tensor 'bias': indices not increasing in chunk 1 (2 after 3)");
  bias() = {{0, 2, 4}, {0, 1, 2, 3}, {1, 2, std::numeric_limits<float>::infinity(), 4}};
  ExpectInvalid("tensor 'bias' chunk 1: non-finite value inf at index 2");
}

class AggregateDecodeTest : public ::testing::Test {
 protected:
  AggregateDecodeTest()
      : table_(MakeTable({{"h.0.fc.weight", {128, 192}, 64, 4}, {"bias", {40}, 8, 3}})),
        aggregate_(RandomAggregate(table_, 2)) {
    bytes_ = ValueOrStop(EncodeStepAggregate(aggregate_, table_));
  }

  absl::Status Decode(absl::string_view bytes) {
    return DecodeStepAggregate(bytes, table_).status();
  }

  // Offset of tensor 0's first per-chunk count.
  size_t FirstCount() const {
    return kAggregateHeaderBytes + 4 * aggregate_.contributors.size() + 4 + 4;
  }

  LayoutTable table_;
  StepAggregate aggregate_;
  std::string bytes_;
};

TEST_F(AggregateDecodeTest, EveryTruncationFailsCleanly) {
  for (size_t n = 0; n < bytes_.size(); ++n) {
    const absl::Status status = Decode(absl::string_view(bytes_).substr(0, n));
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << n << ": " << status;
    ASSERT_THAT(std::string(status.message()), StartsWith("truncated aggregate: ")) << n;
  }
}

TEST_F(AggregateDecodeTest, EveryFlippedByteIsDetected) {
  for (size_t i = 0; i < bytes_.size(); ++i) {
    std::string corrupt = bytes_;
    corrupt[i] ^= 0x01;
    const absl::Status status = Decode(corrupt);
    ASSERT_FALSE(status.ok()) << "byte " << i;
    if (i >= kFrameHeaderBytes) {
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << i << ": " << status;
      ASSERT_THAT(status.message(), HasSubstr("aggregate checksum mismatch")) << i;
    }
  }
}

TEST_F(AggregateDecodeTest, FramingErrors) {
  EXPECT_THAT(Decode(bytes_ + "x").message(), HasSubstr("trailing bytes after aggregate"));
  std::string bytes = bytes_;
  bytes[4] = 7;
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("unsupported aggregate format version 7"));
  bytes = bytes_;
  bytes.replace(0, 4, "DMP1");
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("expected a step aggregate, got a step payload"));
  bytes.replace(0, 4, "\x89PNG");
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("not a step aggregate: bad magic"));

  bytes = bytes_;
  bytes.insert(bytes.size() - kCrcBytes, 2, '\0');
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr("trailing bytes after aggregate: 2 bytes after the last tensor"));
}

TEST_F(AggregateDecodeTest, ResealedMutationsAreRejectedOrCanonical) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<size_t> offset(kFrameHeaderBytes, bytes_.size() - kCrcBytes - 1);
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = bytes_;
    for (int flips = 1 + trial % 3; flips > 0; --flips) {
      bytes[offset(rng)] = static_cast<char>(rng());
    }
    Reseal(&bytes);
    absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(bytes, table_);
    if (decoded.ok()) {
      ++accepted;
      absl::StatusOr<std::string> encoded = EncodeStepAggregate(*decoded, table_);
      ASSERT_TRUE(encoded.ok()) << encoded.status();
      ASSERT_EQ(*encoded, bytes) << "trial " << trial;
    } else {
      ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << decoded.status();
    }
  }
  EXPECT_GT(accepted, 0);
}

TEST_F(AggregateDecodeTest, CountLargerThanTheChunk) {
  std::string bytes = bytes_;
  EncodeU16(&bytes[FirstCount() + 2], 4097);  // chunk 1 of 4096 coefficients
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr("tensor 'h.0.fc.weight' chunk 1: 4097 entries, more than the chunk's "
                        "4096 coefficients"));
}

TEST_F(AggregateDecodeTest, CountsClaimingMoreEntriesThanPresent) {
  std::string bytes = bytes_;
  EncodeU16(&bytes[FirstCount() + 2], 4096);
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr("truncated aggregate: tensor 'h.0.fc.weight' needs "));
}

TEST_F(AggregateDecodeTest, HugeContributorCountDoesNotAllocate) {
  std::string bytes = bytes_;
  EncodeU32(&bytes[kAggregateHeaderBytes - 4], 0xFFFFFFFF);
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("truncated aggregate: 4294967295 contributors"));
}

TEST_F(AggregateDecodeTest, DecodedContentIsValidated) {
  std::string bytes = bytes_;
  EncodeU32(&bytes[kAggregateHeaderBytes], 9);  // contributors {9, 3, ...}
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(), HasSubstr("contributors not increasing: 3 after 9"));

  // Chunk 0 is full (4096 entries): its first two indices are 0 and 1; make them equal.
  bytes = bytes_;
  const size_t first_index = FirstCount() + 2 * table_[0].layout.num_chunks();
  EncodeU16(&bytes[first_index + 2], 0);
  Reseal(&bytes);
  EXPECT_THAT(Decode(bytes).message(),
              HasSubstr("tensor 'h.0.fc.weight': duplicate index 0 in chunk 0"));
}

// ---- Decoding over several threads ----

// Runs a call's tasks on the calling thread, the last first, as if each had a thread of its
// own (threads() = 4): what a decoder returns must not depend on how its tensors are shared
// out or in which order the shares run.
class LastFirstRunner : public TaskRunner {
 public:
  size_t threads() const override { return 4; }
  void Run(size_t n, absl::FunctionRef<void(size_t)> task) const override {
    most_tasks_ = std::max(most_tasks_, n);
    for (size_t i = n; i-- > 0;) task(i);
  }
  size_t most_tasks() const { return most_tasks_; }

 private:
  mutable size_t most_tasks_ = 0;
};

// About 34,000 entries in tensors of several sizes: enough for four shares. "odd" has 70
// entries, so its signs end in padding bits.
LayoutTable LargeTable() {
  return MakeTable({{"w1", {1024, 512}, 64, 128},
                    {"b", {4096}, 64, 16},
                    {"odd", {1000}, 100, 7},
                    {"w2", {512, 512}, 64, 128},
                    {"w3", {1024, 256}, 64, 128}});
}

// Decodes `original` and resealed mutations of it with both runners: the same payload, or the
// same error.
template <typename Decode, typename Encode>
void ExpectSameOverThreads(const std::string& original, size_t first_mutable, Decode decode,
                           Encode encode) {
  LastFirstRunner shared;
  const TaskRunner& alone = CallingThread();
  std::mt19937 rng(5);
  std::uniform_int_distribution<size_t> offset(first_mutable, original.size() - kCrcBytes - 1);
  for (int trial = 0; trial < 300; ++trial) {
    std::string bytes = original;
    for (int flips = trial % 3; flips > 0; --flips) bytes[offset(rng)] = static_cast<char>(rng());
    Reseal(&bytes);
    const auto on_one = decode(bytes, alone);
    const auto on_four = decode(bytes, shared);
    ASSERT_EQ(on_one.status(), on_four.status()) << "trial " << trial;
    if (on_one.ok()) {
      ASSERT_EQ(encode(*on_one), encode(*on_four)) << "trial " << trial;
    }
  }
  EXPECT_GE(shared.most_tasks(), 4u);
}

TEST(DecodeOverThreadsTest, PayloadsDecodeAsOnOneThread) {
  const LayoutTable table = LargeTable();
  for (ValueEncoding encoding : kAllEncodings) {
    SCOPED_TRACE(ValueEncodingName(encoding));
    ExpectSameOverThreads(
        EncodeOrDie(RandomPayload(table, encoding, 9, 3), table), kEncodingOffset,
        [&table](const std::string& bytes, const TaskRunner& runner) {
          return DecodeStepPayload(bytes, table, runner);
        },
        [&table](const StepPayload& payload) { return EncodeOrDie(payload, table); });
  }
}

// Sign means: mutated codes fall outside the table and padding bits turn up, read errors that
// must win over a later tensor's bad header as on one thread.
TEST(DecodeOverThreadsTest, SignMeanAggregatesDecodeAsOnOneThread) {
  const LayoutTable table = LargeTable();
  std::vector<StepPayload> payloads;  // as the coordinator holds them: signs of +-1
  for (uint32_t w = 0; w < 3; ++w) {
    absl::StatusOr<StepPayload> decoded = DecodeStepPayload(
        EncodeOrDie(RandomPayload(table, ValueEncoding::kSign, 9, w), table), table);
    ASSERT_OK(decoded);
    payloads.push_back(*std::move(decoded));
  }
  absl::StatusOr<StepAggregate> aggregate =
      AggregateStep({{0, &payloads[0]}, {1, &payloads[1]}, {2, &payloads[2]}}, table);
  ASSERT_OK(aggregate);
  ASSERT_EQ(aggregate->encoding, ValueEncoding::kSignMean);
  absl::StatusOr<std::string> bytes = EncodeStepAggregate(*aggregate, table);
  ASSERT_OK(bytes);
  ExpectSameOverThreads(
      *bytes, kEncodingOffset,
      [&table](const std::string& bytes, const TaskRunner& runner) {
        return DecodeStepAggregate(bytes, table, runner);
      },
      [&table](const StepAggregate& decoded) { return *EncodeStepAggregate(decoded, table); });
}

// Two faults in one message: the error is the one a single pass in message order meets first.
// Tensor "g" then tensor "h", each 2 chunks of k = 5 (10 one-byte indices, then 2 bytes of 10
// signs and 6 padding bits).
TEST(DecodeOverThreadsTest, TheFirstFaultInMessageOrderIsReported) {
  const LayoutTable table = MakeTable({{"g", {96}, 48, 5}, {"h", {96}, 48, 5}});
  const std::string good = EncodeOrDie(RandomPayload(table, ValueEncoding::kSign, 1, 2), table);
  constexpr size_t kTensorBytes = 4 + 4 + 10 + 2;
  const size_t g = kEncodingOffset + 1 + 8 + 4;  // g's chunk count
  const size_t h = g + kTensorBytes;
  const auto g_padding = [&](std::string& b) { b[g + 8 + 10 + 1] |= static_cast<char>(0x80); };
  const auto h_padding = [&](std::string& b) { b[h + 8 + 10 + 1] |= static_cast<char>(0x80); };
  const auto h_header = [&](std::string& b) { b[h] = 0x7f; };
  const auto g_unordered = [&](std::string& b) { std::swap(b[g + 8], b[g + 9]); };
  const auto trailing = [](std::string& b) { b.insert(b.size() - kCrcBytes, 1, '\0'); };
  struct Case {
    std::vector<std::function<void(std::string&)>> faults;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{g_padding, h_header}, "tensor 'g': nonzero padding bits after the last sign"},
      {{h_padding, g_unordered}, "tensor 'h': nonzero padding bits after the last sign"},
      {{g_unordered, trailing}, "trailing bytes after payload"},
      {{g_unordered, h_header}, "tensor 'h': payload has 127 chunks"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    std::string bytes = good;
    for (const auto& fault : c.faults) fault(bytes);
    Reseal(&bytes);
    for (const TaskRunner* runner : {&CallingThread(), &HelperThreads()}) {
      const absl::Status status = DecodeStepPayload(bytes, table, *runner).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(status.message(), HasSubstr(c.expected));
    }
  }
  // Each fault alone is reported, so none of the cases above passes by accident.
  const std::vector<std::function<void(std::string&)>> each = {g_padding, h_padding, h_header,
                                                               g_unordered};
  for (const auto& fault : each) {
    std::string bytes = good;
    fault(bytes);
    Reseal(&bytes);
    EXPECT_FALSE(DecodeStepPayload(bytes, table).ok());
  }
}

TEST(DecodeOverThreadsTest, AggregatesDecodeAsOnOneThread) {
  const LayoutTable table = LargeTable();
  const StepAggregate aggregate = RandomAggregate(table, 4);
  absl::StatusOr<std::string> bytes = EncodeStepAggregate(aggregate, table);
  ASSERT_OK(bytes);
  ExpectSameOverThreads(
      *bytes, kEncodingOffset,
      [&table](const std::string& bytes, const TaskRunner& runner) {
        return DecodeStepAggregate(bytes, table, runner);
      },
      [&table](const StepAggregate& decoded) { return *EncodeStepAggregate(decoded, table); });
}

}  // namespace
}  // namespace demod
