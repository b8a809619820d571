#include "common/aggregation.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/payload_codec.h"
#include "common/value_encoding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

LayoutTable SmallTable() {
  // "a": 1-D of 8 in two chunks of 4, k = 2. "b": 4 x 4 in one chunk of 16, k = 3.
  LayoutTable table;
  table.push_back({"a", *MakeChunkLayout({8}, 4, 2)});
  table.push_back({"b", *MakeChunkLayout({4, 4}, 4, 3)});
  return table;
}

StepPayload MakePayload(int64_t step, std::vector<SparseTensor> tensors) {
  StepPayload payload;
  payload.step = step;
  payload.tensors = std::move(tensors);
  return payload;
}

uint32_t FloatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

std::vector<uint32_t> Bits(const std::vector<float>& values) {
  std::vector<uint32_t> bits;
  for (float v : values) bits.push_back(FloatBits(v));
  return bits;
}

void ExpectBitIdentical(const StepAggregate& a, const StepAggregate& b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.contributors, b.contributors);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t t = 0; t < a.tensors.size(); ++t) {
    EXPECT_EQ(a.tensors[t].chunk_offsets, b.tensors[t].chunk_offsets) << t;
    EXPECT_EQ(a.tensors[t].indices, b.tensors[t].indices) << t;
    EXPECT_EQ(Bits(a.tensors[t].values), Bits(b.tensors[t].values)) << t;
  }
}

TEST(AggregateStepTest, MeanOverTheWorkersThatSelectedACoefficient) {
  const LayoutTable table = SmallTable();
  const StepPayload w0 =
      MakePayload(3, {{{0, 2, 1, 3}, {1.0f, 2.0f, 5.0f, 6.0f}}, {{0, 5, 15}, {1.0f, 1.0f, 1.0f}}});
  const StepPayload w1 = MakePayload(
      3, {{{2, 3, 0, 1}, {4.0f, 8.0f, -1.0f, 7.0f}}, {{5, 6, 15}, {3.0f, -2.0f, 2.0f}}});
  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{0, &w0}, {1, &w1}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_EQ(aggregate->step, 3);
  EXPECT_THAT(aggregate->contributors, ElementsAre(0, 1));

  const AggregateTensor& a = aggregate->tensors[0];
  EXPECT_THAT(a.chunk_offsets, ElementsAre(0, 3, 6));
  // Chunk 0: 0 only from w0 (kept, not halved), 2 from both (mean), 3 only from w1.
  // Chunk 1: 1 from both, 3 only from w0, 0 only from w1.
  EXPECT_THAT(a.indices, ElementsAre(0, 2, 3, 0, 1, 3));
  EXPECT_THAT(a.values, ElementsAre(1.0f, 3.0f, 8.0f, -1.0f, 6.0f, 6.0f));

  const AggregateTensor& b = aggregate->tensors[1];
  EXPECT_THAT(b.chunk_offsets, ElementsAre(0, 4));
  EXPECT_THAT(b.indices, ElementsAre(0, 5, 6, 15));
  EXPECT_THAT(b.values, ElementsAre(1.0f, 2.0f, -2.0f, 1.5f));

  EXPECT_OK(ValidateStepAggregate(*aggregate, table));
}

// bf16 payloads give a bf16 aggregate: each mean rounded to bf16, as precise as what was sent.
// Mixed encodings (a misconfigured worker) fall back to f32.
TEST(AggregateStepTest, MeansOfHalfPrecisionPayloadsAreRoundedToTheirEncoding) {
  LayoutTable table;
  table.push_back({"a", *MakeChunkLayout({4}, 4, 1)});
  StepPayload p = MakePayload(1, {{{0}, {1.0f}}});
  StepPayload q = MakePayload(1, {{{0}, {1.0078125f}}});  // the next bf16 after 1
  for (ValueEncoding encoding : {ValueEncoding::kBFloat16, ValueEncoding::kFloat16}) {
    p.encoding = q.encoding = encoding;
    absl::StatusOr<StepAggregate> aggregate = AggregateStep({{0, &p}, {1, &q}}, table);
    ASSERT_TRUE(aggregate.ok()) << aggregate.status();
    EXPECT_EQ(aggregate->encoding, encoding);
    // The mean, 1.00390625, needs 9 significant bits: bf16 rounds it to even (1.0), f16 keeps it.
    EXPECT_EQ(aggregate->tensors[0].values[0],
              encoding == ValueEncoding::kBFloat16 ? 1.0f : 1.00390625f);
    EXPECT_OK(EncodeStepAggregate(*aggregate, table));
  }
  p.encoding = ValueEncoding::kBFloat16;
  q.encoding = ValueEncoding::kFloat32;
  absl::StatusOr<StepAggregate> mixed = AggregateStep({{0, &p}, {1, &q}}, table);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->encoding, ValueEncoding::kFloat32);
  EXPECT_EQ(mixed->tensors[0].values[0], 1.00390625f);
  p.encoding = q.encoding = ValueEncoding::kSign;  // means of signs travel as their codes
  EXPECT_EQ(AggregateStep({{0, &p}, {1, &q}}, table)->encoding, ValueEncoding::kSignMean);
  EXPECT_EQ(AggregateStep({{0, &p, 1}, {1, &q, 3}}, table, Weighting::kSamples)->encoding,
            ValueEncoding::kFloat32);  // weighted, they are not tallies
}

TEST(AggregateStepTest, NegativeZeroSurvivesASingleSelector) {
  LayoutTable table;
  table.push_back({"x", *MakeChunkLayout({2}, 2, 1)});
  const StepPayload p = MakePayload(0, {{{1}, {-0.0f}}});
  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{0, &p}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_EQ(FloatBits(aggregate->tensors[0].values[0]), FloatBits(-0.0f));
}

TEST(AggregateStepTest, SingleContributorKeepsItsValuesExactly) {
  const LayoutTable table = SmallTable();
  const StepPayload w = MakePayload(1, {{{0, 3, 1, 2}, {0.1f, -1e-7f, 3.3e-3f, 9.9f}},
                                        {{1, 7, 8}, {1.0f / 3.0f, -2.0f / 7.0f, 1e30f}}});
  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{42, &w}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_THAT(aggregate->contributors, ElementsAre(42));
  for (size_t t = 0; t < table.size(); ++t) {
    EXPECT_EQ(aggregate->tensors[t].indices, w.tensors[t].indices);
    EXPECT_EQ(Bits(aggregate->tensors[t].values), Bits(w.tensors[t].values));
  }
}

TEST(AggregateStepTest, SumsInAscendingWorkerIdWhateverTheInputOrder) {
  // In float, (1e8 + 1) - 1e8 == 0 but (1e8 - 1e8) + 1 == 1: the summation order shows.
  LayoutTable table;
  table.push_back({"x", *MakeChunkLayout({1}, 1, 1)});
  const StepPayload big = MakePayload(0, {{{0}, {1e8f}}});
  const StepPayload one = MakePayload(0, {{{0}, {1.0f}}});
  const StepPayload minus_big = MakePayload(0, {{{0}, {-1e8f}}});
  std::vector<Contribution> contributions = {{30, &minus_big}, {10, &big}, {20, &one}};
  std::sort(contributions.begin(), contributions.end(),
            [](const Contribution& a, const Contribution& b) { return a.worker_id < b.worker_id; });
  do {
    absl::StatusOr<StepAggregate> aggregate = AggregateStep(contributions, table);
    ASSERT_TRUE(aggregate.ok()) << aggregate.status();
    EXPECT_THAT(aggregate->contributors, ElementsAre(10, 20, 30));
    EXPECT_EQ(FloatBits(aggregate->tensors[0].values[0]), FloatBits(0.0f));  // ((1e8+1)-1e8)/3
  } while (std::next_permutation(
      contributions.begin(), contributions.end(),
      [](const Contribution& a, const Contribution& b) { return a.worker_id < b.worker_id; }));
}

// What AggregateStep must compute, the slow and obvious way.
// With `samples` (by worker id), the mean weighted by them, summed in double.
StepAggregate ReferenceAggregate(std::vector<std::pair<uint32_t, const StepPayload*>> inputs,
                                 const LayoutTable& table,
                                 const std::map<uint32_t, uint32_t>* samples = nullptr) {
  std::sort(inputs.begin(), inputs.end());
  StepAggregate out;
  out.step = inputs[0].second->step;
  for (const auto& input : inputs) out.contributors.push_back(input.first);
  for (size_t t = 0; t < table.size(); ++t) {
    const ChunkLayout& layout = table[t].layout;
    AggregateTensor tensor;
    tensor.chunk_offsets.push_back(0);
    for (int64_t c = 0; c < layout.num_chunks(); ++c) {
      // (value, worker id) in ascending worker id
      std::map<uint32_t, std::vector<std::pair<float, uint32_t>>> by_index;
      for (const auto& input : inputs) {
        const SparseTensor& sparse = input.second->tensors[t];
        for (int64_t i = c * layout.topk; i < (c + 1) * layout.topk; ++i) {
          by_index[sparse.indices[i]].push_back({sparse.values[i], input.first});
        }
      }
      for (const auto& [index, values] : by_index) {
        tensor.indices.push_back(index);
        if (samples == nullptr) {
          float sum = 0.0f;
          for (const auto& [v, id] : values) sum += v;
          tensor.values.push_back(sum / static_cast<float>(values.size()));
        } else {
          double sum = 0;
          uint64_t weight = 0;
          for (const auto& [v, id] : values) {
            sum += static_cast<double>(v) * samples->at(id);
            weight += samples->at(id);
          }
          tensor.values.push_back(static_cast<float>(sum / static_cast<double>(weight)));
        }
      }
      tensor.chunk_offsets.push_back(tensor.indices.size());
    }
    out.tensors.push_back(std::move(tensor));
  }
  return out;
}

// Each worker picks topk of the first `pool_factor` x topk positions of every chunk, so that
// workers often pick the same coefficients; pool_factor 0 picks from the whole chunk.
StepPayload RandomPayload(const LayoutTable& table, int64_t step, std::mt19937* rng,
                          int64_t pool_factor = 2) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  StepPayload payload;
  payload.step = step;
  for (const NamedLayout& named : table) {
    const ChunkLayout& layout = named.layout;
    SparseTensor tensor;
    std::vector<uint32_t> all(layout.chunk_size());
    for (int64_t c = 0; c < layout.num_chunks(); ++c) {
      for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint32_t>(i);
      const size_t pool =
          pool_factor == 0 ? all.size()
                           : std::min(all.size(), static_cast<size_t>(pool_factor * layout.topk));
      std::shuffle(all.begin(), all.begin() + pool, *rng);
      std::vector<uint32_t> chosen(all.begin(), all.begin() + layout.topk);
      std::sort(chosen.begin(), chosen.end());
      for (uint32_t index : chosen) {
        tensor.indices.push_back(index);
        tensor.values.push_back(normal(*rng));
      }
    }
    payload.tensors.push_back(std::move(tensor));
  }
  return payload;
}

// Random payloads of one step from workers `ids`, as the reference's inputs and as
// contributions (with their samples, when given). The pointers are into `payloads`.
struct RandomStep {
  std::vector<StepPayload> payloads;
  std::vector<std::pair<uint32_t, const StepPayload*>> inputs;
  std::vector<Contribution> contributions;
};
RandomStep MakeRandomStep(const LayoutTable& table, const std::vector<uint32_t>& ids,
                          std::mt19937* rng,
                          const std::map<uint32_t, uint32_t>* samples = nullptr) {
  RandomStep step;
  for (size_t w = 0; w < ids.size(); ++w) step.payloads.push_back(RandomPayload(table, 8, rng));
  for (size_t w = 0; w < ids.size(); ++w) {
    step.inputs.push_back({ids[w], &step.payloads[w]});
    step.contributions.push_back(
        {ids[w], &step.payloads[w], samples == nullptr ? 0 : samples->at(ids[w])});
  }
  return step;
}

TEST(AggregateStepTest, MatchesTheReferenceAndIgnoresInputOrder) {
  LayoutTable table;
  table.push_back({"h.0.fc.weight", *MakeChunkLayout({128, 192}, 64, 32)});
  table.push_back({"h.0.bias", *MakeChunkLayout({96}, 64, 32)});
  table.push_back({"scalar", *MakeChunkLayout({}, 64, 32)});
  // Chunks above 65536 coefficients take the merge path instead of dense slots.
  table.push_back({"prime", *MakeChunkLayout({65537}, 70000, 32)});
  ASSERT_EQ(table.back().layout.chunk_size(), 65537);
  std::mt19937 rng(1234);
  const RandomStep random = MakeRandomStep(table, {7, 2, 11, 5, 0}, &rng);
  std::vector<Contribution> contributions = random.contributions;
  const StepAggregate reference = ReferenceAggregate(random.inputs, table);
  EXPECT_THAT(reference.contributors, ElementsAre(0, 2, 5, 7, 11));

  std::sort(contributions.begin(), contributions.end(),
            [](const Contribution& a, const Contribution& b) { return a.worker_id < b.worker_id; });
  int permutations = 0;
  do {
    absl::StatusOr<StepAggregate> aggregate = AggregateStep(contributions, table);
    ASSERT_TRUE(aggregate.ok()) << aggregate.status();
    ExpectBitIdentical(*aggregate, reference);
    ASSERT_FALSE(HasFailure()) << "permutation " << permutations;
    ++permutations;
  } while (std::next_permutation(
      contributions.begin(), contributions.end(),
      [](const Contribution& a, const Contribution& b) { return a.worker_id < b.worker_id; }));
  EXPECT_EQ(permutations, 120);
}

// Selections spread over whole chunks, as real ones are: chunks of one bitmap word or of many,
// sizes that are not multiples of 64, words holding 0 to many selected coefficients.
TEST(AggregateStepTest, MatchesTheReferenceForSpreadSelections) {
  LayoutTable table;
  table.push_back({"square", *MakeChunkLayout({128, 128}, 64, 32)});  // chunks of 4096
  table.push_back({"wide", *MakeChunkLayout({20000}, 20000, 700)});   // 5 summary words
  table.push_back({"odd", *MakeChunkLayout({3, 333}, 333, 17)});      // 999, not 64-aligned
  table.push_back({"tiny", *MakeChunkLayout({10}, 10, 3)});
  ASSERT_EQ(table[1].layout.chunk_size(), 20000);
  for (int64_t pool_factor : {0, 1, 2, 8}) {
    for (int workers : {1, 2, 8, 33}) {
      SCOPED_TRACE(testing::Message() << "pool " << pool_factor << ", workers " << workers);
      std::mt19937 rng(static_cast<uint32_t>(100 * pool_factor + workers));
      std::vector<StepPayload> payloads;
      for (int w = 0; w < workers; ++w) {
        payloads.push_back(RandomPayload(table, 4, &rng, pool_factor));
      }
      std::vector<std::pair<uint32_t, const StepPayload*>> inputs;
      std::vector<Contribution> contributions;
      for (int w = 0; w < workers; ++w) {
        inputs.push_back({static_cast<uint32_t>(3 * w), &payloads[w]});
        contributions.push_back({static_cast<uint32_t>(3 * w), &payloads[w]});
      }
      absl::StatusOr<StepAggregate> aggregate = AggregateStep(contributions, table);
      ASSERT_TRUE(aggregate.ok()) << aggregate.status();
      ExpectBitIdentical(*aggregate, ReferenceAggregate(inputs, table));
    }
  }
}

// The aggregate of sign payloads: the same floats as f32 means of the signs (bit for bit), in
// a few bits each on the wire.
TEST(AggregateStepTest, SignPayloadsGiveSignMeansBitIdenticalToTheF32Means) {
  LayoutTable table;
  table.push_back({"w", *MakeChunkLayout({128, 192}, 64, 32)});
  table.push_back({"prime", *MakeChunkLayout({65537}, 70000, 32)});  // the merge path
  for (int workers : {1, 2, 5, 8, 32}) {
    SCOPED_TRACE(workers);
    std::mt19937 rng(static_cast<uint32_t>(workers));
    std::vector<uint32_t> ids(static_cast<size_t>(workers));
    std::iota(ids.begin(), ids.end(), 0);
    RandomStep random = MakeRandomStep(table, ids, &rng);
    for (StepPayload& payload : random.payloads) {
      payload.encoding = ValueEncoding::kSign;
      for (SparseTensor& t : payload.tensors) {
        QuantizeValues(ValueEncoding::kSign, t.values.data(), t.values.size());
      }
    }
    absl::StatusOr<StepAggregate> aggregate = AggregateStep(random.contributions, table);
    ASSERT_TRUE(aggregate.ok()) << aggregate.status();
    EXPECT_EQ(aggregate->encoding, ValueEncoding::kSignMean);
    ExpectBitIdentical(*aggregate, ReferenceAggregate(random.inputs, table));
    absl::StatusOr<std::string> encoded = AggregateStepEncoded(random.contributions, table);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(*encoded, table);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ExpectBitIdentical(*decoded, *aggregate);
    StepAggregate as_f32 = *aggregate;
    as_f32.encoding = ValueEncoding::kFloat32;
    EXPECT_LT(encoded->size(), EncodeStepAggregate(as_f32, table)->size());
  }
}

TEST(AggregateStepTest, ResultEncodesAndDecodes) {
  LayoutTable table;
  table.push_back({"w", *MakeChunkLayout({64, 64}, 16, 4)});
  std::mt19937 rng(5);
  const StepPayload p0 = RandomPayload(table, 2, &rng);
  const StepPayload p1 = RandomPayload(table, 2, &rng);
  const StepPayload p2 = RandomPayload(table, 2, &rng);
  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{4, &p0}, {1, &p1}, {9, &p2}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  absl::StatusOr<std::string> bytes = EncodeStepAggregate(*aggregate, table);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<StepAggregate> decoded = DecodeStepAggregate(*bytes, table);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectBitIdentical(*decoded, *aggregate);
}

TEST(AggregateStepTest, EveryCoefficientSelectedFillsTheChunk) {
  LayoutTable table;
  table.push_back({"full", *MakeChunkLayout({4}, 4, 4)});
  const StepPayload p = MakePayload(0, {{{0, 1, 2, 3}, {1, 2, 3, 4}}});
  const StepPayload q = MakePayload(0, {{{0, 1, 2, 3}, {3, 2, 1, 0}}});
  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{0, &p}, {1, &q}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_THAT(aggregate->tensors[0].chunk_offsets, ElementsAre(0, 4));
  EXPECT_THAT(aggregate->tensors[0].values, ElementsAre(2, 2, 2, 2));
}

// The coordinator's per-step load for a mid-sized model; a loose bound that only catches an
// accidental quadratic or per-coefficient allocation.
// A coordinator-sized step (1200 chunks, 8 workers: 307,200 entries) is spread over threads;
// every tensor must come out exactly as when it is aggregated alone, on one thread.
TEST(AggregateStepTest, CoordinatorSizedStepSplitOverThreadsEqualsOneTensorAtATime) {
  LayoutTable table;
  for (int i = 0; i < 12; ++i) {
    table.push_back({"block" + std::to_string(i), *MakeChunkLayout({640, 640}, 64, 32)});
  }
  std::mt19937 rng(77);
  std::vector<StepPayload> payloads;
  for (int w = 0; w < 8; ++w) payloads.push_back(RandomPayload(table, 1, &rng));
  std::vector<Contribution> contributions;
  for (int w = 0; w < 8; ++w) contributions.push_back({static_cast<uint32_t>(w), &payloads[w]});

  absl::StatusOr<StepAggregate> aggregate = AggregateStep(contributions, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_EQ(table.size() * table[0].layout.num_chunks(), 1200u);
  EXPECT_OK(ValidateStepAggregate(*aggregate, table));
  for (size_t t = 0; t < table.size(); ++t) {
    std::vector<StepPayload> single(payloads.size());
    std::vector<Contribution> alone;
    for (size_t w = 0; w < payloads.size(); ++w) {
      single[w] = MakePayload(1, {payloads[w].tensors[t]});
      alone.push_back({static_cast<uint32_t>(w), &single[w]});
    }
    absl::StatusOr<StepAggregate> one = AggregateStep(alone, {table[t]});
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_EQ(one->tensors[0].chunk_offsets, aggregate->tensors[t].chunk_offsets) << t;
    EXPECT_EQ(one->tensors[0].indices, aggregate->tensors[t].indices) << t;
    EXPECT_EQ(Bits(one->tensors[0].values), Bits(aggregate->tensors[t].values)) << t;
  }
}

// What the coordinator sends: the same bytes as aggregating, then encoding, whatever the
// number of workers (one thread or several), the encoding, or how much the selections overlap.
TEST(AggregateStepEncodedTest, SameBytesAsAggregateThenEncode) {
  LayoutTable table;
  for (int i = 0; i < 12; ++i) {
    table.push_back({"block" + std::to_string(i), *MakeChunkLayout({640, 640}, 64, 32)});
  }
  table.push_back({"bias", *MakeChunkLayout({640}, 64, 32)});
  table.push_back({"wide", *MakeChunkLayout({65537}, 70000, 4)});  // merged, not dense
  std::mt19937 rng(5);
  for (int workers : {1, 2, 8}) {
    for (ValueEncoding encoding : {ValueEncoding::kFloat32, ValueEncoding::kBFloat16}) {
      for (int64_t pool_factor : {2, 0}) {
        std::vector<StepPayload> payloads;
        for (int w = 0; w < workers; ++w) {
          payloads.push_back(RandomPayload(table, 9, &rng, pool_factor));
          payloads.back().encoding = encoding;
          for (SparseTensor& t : payloads.back().tensors) {
            QuantizeValues(encoding, t.values.data(), t.values.size());
          }
        }
        std::vector<Contribution> contributions;
        for (int w = workers - 1; w >= 0; --w) {  // any order
          contributions.push_back({static_cast<uint32_t>(10 * w), &payloads[w]});
        }
        absl::StatusOr<StepAggregate> aggregate = AggregateStep(contributions, table);
        ASSERT_TRUE(aggregate.ok()) << aggregate.status();
        absl::StatusOr<std::string> expected = EncodeStepAggregate(*aggregate, table);
        ASSERT_TRUE(expected.ok()) << expected.status();
        absl::StatusOr<std::string> encoded = AggregateStepEncoded(contributions, table);
        ASSERT_TRUE(encoded.ok()) << encoded.status();
        EXPECT_TRUE(*encoded == *expected)
            << workers << " workers, " << ValueEncodingName(encoding) << ", pool " << pool_factor;
      }
    }
  }
}

TEST(AggregateStepWeightingTest, MeanWeightedBySamples) {
  LayoutTable table;
  table.push_back({"x", *MakeChunkLayout({4}, 4, 2)});
  const StepPayload p = MakePayload(1, {{{0, 1}, {1.0f, 0.1f}}});
  const StepPayload q = MakePayload(1, {{{0, 2}, {5.0f, -0.3f}}});
  absl::StatusOr<StepAggregate> aggregate =
      AggregateStep({{0, &p, 3}, {1, &q, 1}}, table, Weighting::kSamples);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_THAT(aggregate->tensors[0].indices, ElementsAre(0, 1, 2));
  // (3 x 1 + 1 x 5) / 4; the others, chosen by one worker each, keep its value exactly.
  EXPECT_THAT(aggregate->tensors[0].values, ElementsAre(2.0f, 0.1f, -0.3f));
  // Equally weighted, the samples do not count.
  EXPECT_THAT(AggregateStep({{0, &p, 3}, {1, &q, 1}}, table)->tensors[0].values,
              ElementsAre(3.0f, 0.1f, -0.3f));
}

TEST(AggregateStepWeightingTest, MatchesTheReferenceOnBothPaths) {
  LayoutTable table;
  table.push_back({"h.0.fc.weight", *MakeChunkLayout({128, 192}, 64, 32)});
  table.push_back({"odd", *MakeChunkLayout({3, 333}, 333, 17)});
  table.push_back({"prime", *MakeChunkLayout({65537}, 70000, 32)});  // the merge path
  std::mt19937 rng(77);
  const std::map<uint32_t, uint32_t> samples = {
      {7, 1}, {2, 13}, {11, 16}, {5, 3}, {0, kMaxContributionSamples}};
  const RandomStep random = MakeRandomStep(table, {7, 2, 11, 5, 0}, &rng, &samples);
  const std::vector<Contribution>& contributions = random.contributions;
  const auto& inputs = random.inputs;
  absl::StatusOr<StepAggregate> aggregate =
      AggregateStep(contributions, table, Weighting::kSamples);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  ExpectBitIdentical(*aggregate, ReferenceAggregate(inputs, table, &samples));
  EXPECT_OK(ValidateStepAggregate(*aggregate, table));
  absl::StatusOr<std::string> encoded =
      AggregateStepEncoded(contributions, table, Weighting::kSamples);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_TRUE(*encoded == *EncodeStepAggregate(*aggregate, table));
}

// One contributor takes a path of its own (its chunks are their own unions): the same means as
// the reference under both weightings, on dense and merged chunks.
TEST(AggregateStepWeightingTest, OneContributorMatchesTheReferenceOnBothWeightings) {
  LayoutTable table;
  table.push_back({"h.0.fc.weight", *MakeChunkLayout({128, 192}, 64, 32)});
  table.push_back({"odd", *MakeChunkLayout({3, 333}, 333, 17)});
  table.push_back({"prime", *MakeChunkLayout({65537}, 70000, 32)});
  std::mt19937 rng(78);
  const std::map<uint32_t, uint32_t> samples = {{9, 13}};
  const RandomStep random = MakeRandomStep(table, {9}, &rng, &samples);
  for (Weighting weighting : {Weighting::kEqual, Weighting::kSamples}) {
    absl::StatusOr<StepAggregate> aggregate = AggregateStep(random.contributions, table, weighting);
    ASSERT_TRUE(aggregate.ok()) << aggregate.status();
    ExpectBitIdentical(*aggregate,
                       ReferenceAggregate(random.inputs, table,
                                          weighting == Weighting::kSamples ? &samples : nullptr));
  }
}

// What the decoder would have refused still aggregates as the general path does: a chunk out of
// order is sorted, an index out of range or a NaN is an error, an infinity the float bound.
TEST(AggregateStepTest, OneContributorOutOfOrderOrOutOfRange) {
  const LayoutTable table = SmallTable();
  const StepPayload unordered =
      MakePayload(0, {{{2, 0, 1, 3}, {4.0f, -1.0f, 5.0f, 6.0f}}, {{15, 5, 0}, {1.0f, 2.0f, 3.0f}}});
  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{0, &unordered}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_THAT(aggregate->tensors[0].indices, ElementsAre(0, 2, 1, 3));
  EXPECT_THAT(aggregate->tensors[0].values, ElementsAre(-1.0f, 4.0f, 5.0f, 6.0f));
  EXPECT_THAT(aggregate->tensors[1].indices, ElementsAre(0, 5, 15));
  EXPECT_THAT(aggregate->tensors[1].values, ElementsAre(3.0f, 2.0f, 1.0f));

  StepPayload bad = MakePayload(0, {{{0, 1, 2, 4}, {1, 1, 1, 1}}, {{0, 5, 15}, {1, 1, 1}}});
  absl::Status status = AggregateStep({{3, &bad}}, table).status();
  EXPECT_THAT(status.message(),
              HasSubstr("worker 3: tensor 'a' chunk 1: index 4 out of range for chunk of 4"));
  bad.tensors[0].indices[3] = 3;
  bad.tensors[1].values[1] = std::numeric_limits<float>::quiet_NaN();
  status = AggregateStep({{3, &bad}}, table).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("tensor 'b' chunk 0: mean of the values at index 5"));
  bad.tensors[1].values[1] = -std::numeric_limits<float>::infinity();
  aggregate = AggregateStep({{3, &bad}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_EQ(aggregate->tensors[1].values[1], -std::numeric_limits<float>::max());
}

TEST(AggregateStepWeightingTest, EveryContributionNeedsItsSamples) {
  LayoutTable table;
  table.push_back({"x", *MakeChunkLayout({4}, 4, 1)});
  const StepPayload p = MakePayload(1, {{{0}, {1.0f}}});
  const StepPayload q = MakePayload(1, {{{0}, {2.0f}}});
  for (uint32_t bad : {uint32_t{0}, kMaxContributionSamples + 1}) {
    const absl::Status status =
        AggregateStep({{0, &p, 4}, {3, &q, bad}}, table, Weighting::kSamples).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("worker 3 has " + std::to_string(bad) + " samples"));
    EXPECT_EQ(AggregateStepEncoded({{0, &p, 4}, {3, &q, bad}}, table, Weighting::kSamples)
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_OK(AggregateStep({{0, &p, 4}, {3, &q, 0}}, table).status());  // equal: not needed
}

TEST(AggregateStepEncodedTest, FailsWhereAggregationFails) {
  LayoutTable table;
  table.push_back({"dense", *MakeChunkLayout({8}, 4, 2)});
  const StepPayload good = MakePayload(0, {{{0, 1, 2, 3}, {1, 1, 1, 1}}});
  StepPayload bad = good;
  bad.tensors[0].indices[3] = 4;
  const absl::Status status = AggregateStepEncoded({{0, &good}, {3, &bad}}, table).status();
  EXPECT_EQ(status, AggregateStep({{0, &good}, {3, &bad}}, table).status());
  EXPECT_THAT(status.message(), HasSubstr("index 4 out of range"));
  EXPECT_EQ(AggregateStepEncoded({}, table).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AggregateStepErrorsTest, Empty) {
  const absl::Status status = AggregateStep({}, SmallTable()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no contributions"));
}

TEST(AggregateStepErrorsTest, DuplicateWorkerId) {
  const LayoutTable table = SmallTable();
  std::mt19937 rng(1);
  const StepPayload p = RandomPayload(table, 0, &rng);
  const StepPayload q = RandomPayload(table, 0, &rng);
  const absl::Status status = AggregateStep({{3, &p}, {1, &p}, {3, &q}}, table).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("two contributions from worker 3"));
}

TEST(AggregateStepErrorsTest, MismatchedSteps) {
  const LayoutTable table = SmallTable();
  std::mt19937 rng(1);
  const StepPayload p = RandomPayload(table, 4, &rng);
  const StepPayload q = RandomPayload(table, 5, &rng);
  const absl::Status status = AggregateStep({{2, &q}, {1, &p}}, table).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("worker 2 sent step 5, worker 1 sent step 4"));
}

TEST(AggregateStepErrorsTest, TensorCountMismatch) {
  const LayoutTable table = SmallTable();
  std::mt19937 rng(1);
  StepPayload p = RandomPayload(table, 0, &rng);
  p.tensors.pop_back();
  const absl::Status status = AggregateStep({{6, &p}}, table).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("worker 6's payload has 1 tensors, table has 2"));
}

TEST(AggregateStepErrorsTest, EntryCountMismatch) {
  const LayoutTable table = SmallTable();
  std::mt19937 rng(1);
  StepPayload p = RandomPayload(table, 0, &rng);
  p.tensors[1].values.pop_back();
  const absl::Status status = AggregateStep({{6, &p}}, table).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("worker 6: tensor 'b': 3 indices and 2 values"));
}

TEST(AggregateStepErrorsTest, NullPayload) {
  const absl::Status status = AggregateStep({{8, nullptr}}, SmallTable()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("worker 8 has no payload"));
}

TEST(AggregateStepErrorsTest, IndexOutOfRange) {
  LayoutTable table;
  table.push_back({"dense", *MakeChunkLayout({8}, 4, 2)});
  table.push_back({"merged", *MakeChunkLayout({65537}, 70000, 2)});
  const StepPayload good = MakePayload(0, {{{0, 1, 2, 3}, {1, 1, 1, 1}}, {{5, 65536}, {1, 1}}});
  StepPayload bad = good;
  bad.tensors[0].indices[3] = 4;
  absl::Status status = AggregateStep({{0, &good}, {3, &bad}}, table).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("worker 3: tensor 'dense' chunk 1: index 4 out of range for chunk of 4"));
  bad = good;
  bad.tensors[1].indices[1] = 65537;
  status = AggregateStep({{0, &good}, {3, &bad}}, table).status();
  EXPECT_THAT(status.message(), HasSubstr("worker 3: tensor 'merged' chunk 0: index 65537 out of "
                                          "range for chunk of 65537"));
}

// Finite values whose sum overflows float32 are not an error (two workers could otherwise stop
// a run): the mean is the float bound of the sum's sign.
TEST(AggregateStepTest, HugeFiniteValuesGiveABoundedMeanNotAnError) {
  LayoutTable table;
  table.push_back({"x", *MakeChunkLayout({1}, 1, 1)});
  table.push_back({"big", *MakeChunkLayout({65537}, 70000, 1)});
  const StepPayload p = MakePayload(0, {{{0}, {3e38f}}, {{7}, {-3e38f}}});
  const StepPayload q = MakePayload(0, {{{0}, {3e38f}}, {{7}, {-3e38f}}});
  absl::StatusOr<StepAggregate> aggregate = AggregateStep({{0, &p}, {1, &q}}, table);
  ASSERT_TRUE(aggregate.ok()) << aggregate.status();
  EXPECT_EQ(aggregate->tensors[0].values[0], std::numeric_limits<float>::max());
  EXPECT_EQ(aggregate->tensors[1].values[0], -std::numeric_limits<float>::max());
  EXPECT_OK(ValidateStepAggregate(*aggregate, table));
}

}  // namespace
}  // namespace demod
