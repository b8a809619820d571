#include "common/aggregation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/numeric/bits.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/payload_codec.h"
#include "common/run_in_parallel.h"
#include "common/sign_mean.h"
#include "common/status_macros.h"

namespace demod {
namespace {

struct Entry {
  uint32_t index;
  float value;
  uint32_t samples;
};

// A coefficient's running sum under each weighting. Sums start at -0, the identity of addition
// (-0 + x == x for every x, -0 included), so a coefficient's first value is taken as is.
struct EqualSlot {
  float sum = -0.0f;
  uint32_t count = 0;
  void Add(float value, uint32_t /*samples*/) {
    sum += value;
    ++count;
  }
  bool empty() const { return count == 0; }
  float Mean() const { return sum / static_cast<float>(count); }
  bool finite() const { return std::isfinite(sum); }
};
// A product of a float and at most 2^24 samples is exact in double, and a coefficient chosen by
// one worker keeps its value exactly.
struct SamplesSlot {
  double sum = -0.0;
  uint64_t samples = 0;
  void Add(float value, uint32_t weight) {
    sum += static_cast<double>(value) * weight;
    samples += weight;
  }
  bool empty() const { return samples == 0; }
  float Mean() const { return static_cast<float>(sum / static_cast<double>(samples)); }
  bool finite() const { return std::isfinite(sum); }
};

bool IndexLess(const Entry& a, const Entry& b) { return a.index < b.index; }

// Checks the shapes the per-chunk loops rely on. Indices are range-checked as they are used;
// order and finiteness are the decoder's checks, done before a payload gets here.
absl::Status CheckContributions(const std::vector<Contribution>& sorted, const LayoutTable& table,
                                Weighting weighting) {
  for (size_t i = 0; i < sorted.size(); ++i) {
    const Contribution& contribution = sorted[i];
    if (contribution.payload == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("contribution of worker ", contribution.worker_id, " has no payload"));
    }
    if (i > 0 && contribution.worker_id == sorted[i - 1].worker_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("two contributions from worker ", contribution.worker_id));
    }
    if (weighting == Weighting::kSamples &&
        (contribution.samples < 1 || contribution.samples > kMaxContributionSamples)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "contribution of worker ", contribution.worker_id, " has ", contribution.samples,
          " samples; weighting by samples needs 1 to ", kMaxContributionSamples));
    }
    const StepPayload& payload = *contribution.payload;
    if (payload.step != sorted[0].payload->step) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker ", contribution.worker_id, " sent step ", payload.step, ", worker ",
                       sorted[0].worker_id, " sent step ", sorted[0].payload->step));
    }
    if (payload.tensors.size() != table.size()) {
      return absl::InvalidArgumentError(absl::StrCat("worker ", contribution.worker_id,
                                                     "'s payload has ", payload.tensors.size(),
                                                     " tensors, table has ", table.size()));
    }
    for (size_t t = 0; t < table.size(); ++t) {
      const SparseTensor& tensor = payload.tensors[t];
      const auto expected = static_cast<size_t>(table[t].layout.num_selected());
      if (tensor.indices.size() != expected || tensor.values.size() != expected) {
        return absl::InvalidArgumentError(
            absl::StrCat("worker ", contribution.worker_id, ": tensor '", table[t].name,
                         "': ", tensor.indices.size(), " indices and ", tensor.values.size(),
                         " values, expected ", expected));
      }
    }
  }
  return absl::OkStatus();
}

// Chunks up to this many coefficients are summed in dense per-coefficient slots (at most 512 KiB,
// reused across chunks); larger ones, rare (a dimension with no divisor near the target), by
// merging the contributors' sorted lists.
constexpr int64_t kDenseChunkLimit = int64_t{1} << 16;

template <typename Slot>
struct Scratch {
  // Dense path. Between chunks every slot is empty and every touched bit clear. A
  // coefficient's sum and weight share a slot (one cache line touched per entry, not two).
  std::vector<Slot> slots;
  std::vector<uint64_t> touched;  // bit i: coefficient i has a value in the current chunk
  std::vector<uint64_t> summary;  // bit i: touched[i] is not 0
  // Merge path.
  std::vector<Entry> merged;
  std::vector<Entry> spare;
};

absl::Status IndexOutOfRange(const Contribution& contribution, const NamedLayout& named,
                             size_t chunk, uint32_t index) {
  return absl::InvalidArgumentError(
      absl::StrCat("worker ", contribution.worker_id, ": tensor '", named.name, "' chunk ", chunk,
                   ": index ", index, " out of range for chunk of ", named.layout.chunk_size()));
}

// The mean of finite values whose float sum is not finite. An overflowed sum (infinity) gives
// the float bound of its sign: the mean is within +-FLT_MAX, and the bound is the nearest float
// to it that this order of summation can give. An error here would let two workers sending
// huge (finite) values stop the whole run. A NaN sum means a value was not finite: an error.
// (A double sum of finite floats times at most 2^24 samples cannot overflow.)
ABSL_ATTRIBUTE_NOINLINE absl::StatusOr<float> MeanOfNonFiniteSum(const NamedLayout& named,
                                                                 size_t chunk, uint32_t index,
                                                                 double sum) {
  if (std::isinf(sum)) return std::copysign(std::numeric_limits<float>::max(), sum);
  return absl::InvalidArgumentError(absl::StrCat("tensor '", named.name, "' chunk ", chunk,
                                                 ": mean of the values at index ", index,
                                                 " is not finite"));
}

template <typename Slot>
absl::StatusOr<float> MeanOf(const Slot& slot, const NamedLayout& named, size_t chunk,
                             uint32_t index) {
  if (ABSL_PREDICT_FALSE(!slot.finite())) {
    return MeanOfNonFiniteSum(named, chunk, index, slot.sum);
  }
  return slot.Mean();
}

// Room for `more` entries at the end of `v`, growing geometrically (reserve alone would grow
// by exactly what each chunk needs, and copy the whole vector every time).
template <typename T>
T* Extend(std::vector<T>& v, size_t more) {
  const size_t size = v.size();
  if (v.capacity() < size + more) v.reserve(std::max(size + more, 2 * v.capacity()));
  v.resize(size + more);
  return v.data() + size;
}

// Visiting contributors in ascending worker id makes each slot's sum accumulate in that order.
// The touched bitmap then yields the union in index
// order without sorting; its summary (a bit per bitmap word) skips the empty words.
//
// The union comes out of the bitmap without a data-dependent branch per word: a word rarely
// holds more than 4 touched coefficients, so 4 are written unconditionally and only those that
// held one counted (the extra writes land where the next word's go, or in 3 entries of slack).
// Branching on every word's bits instead mispredicts about once per word, which cost more than all
// the adding.
template <typename Slot>
absl::Status AggregateChunkDense(const std::vector<Contribution>& sorted, size_t t, size_t c,
                                 const NamedLayout& named, Scratch<Slot>* scratch,
                                 AggregateTensor* out) {
  const auto k = static_cast<size_t>(named.layout.topk);
  const auto chunk_size = static_cast<uint32_t>(named.layout.chunk_size());
  Slot* slots = scratch->slots.data();
  uint64_t* touched = scratch->touched.data();
  uint64_t* summary = scratch->summary.data();
  size_t distinct = 0;
  for (const Contribution& contribution : sorted) {
    const SparseTensor& tensor = contribution.payload->tensors[t];
    const uint32_t* indices = tensor.indices.data() + c * k;
    const float* values = tensor.values.data() + c * k;
    const uint32_t samples = contribution.samples;
    for (size_t i = 0; i < k; ++i) {
      const uint32_t index = indices[i];
      // An error leaves the scratch dirty: it ends the aggregation that owns it.
      if (ABSL_PREDICT_FALSE(index >= chunk_size)) {
        return IndexOutOfRange(contribution, named, c, index);
      }
      Slot& slot = slots[index];
      distinct += slot.empty();
      slot.Add(values[i], samples);
      touched[index / 64] |= uint64_t{1} << (index % 64);
    }
  }
  // The summary is built here rather than above, where every entry would update the same
  // summary word and wait for the previous entry's store.
  const size_t num_words = (chunk_size + 63) / 64;
  for (size_t word = 0; word < num_words; ++word) {
    summary[word / 64] |= static_cast<uint64_t>(touched[word] != 0) << (word % 64);
  }
  constexpr size_t kUnrolled = 4;
  const size_t begin = out->indices.size();
  uint32_t* union_indices = Extend(out->indices, distinct + kUnrolled - 1);
  size_t n = 0;
  for (size_t s = 0; s < (chunk_size + 4095) / 4096; ++s) {
    for (uint64_t nonempty = summary[s]; nonempty != 0; nonempty &= nonempty - 1) {
      const size_t word = s * 64 + absl::countr_zero(nonempty);
      uint64_t bits = touched[word];
      touched[word] = 0;
      const auto base = static_cast<uint32_t>(word * 64);
      size_t written = 0;  // of the kUnrolled, those that held a coefficient
      for (size_t r = 0; r < kUnrolled; ++r) {
        union_indices[n + r] = base + static_cast<uint32_t>(absl::countr_zero(bits));
        written += bits != 0;
        bits &= bits - 1;
      }
      n += written;
      for (; bits != 0; bits &= bits - 1) {
        union_indices[n++] = base + static_cast<uint32_t>(absl::countr_zero(bits));
      }
    }
    summary[s] = 0;
  }
  out->indices.resize(begin + distinct);
  float* means = Extend(out->values, distinct);
  for (size_t i = 0; i < distinct; ++i) {
    Slot& slot = slots[union_indices[i]];
    DEMOD_ASSIGN_OR_RETURN(means[i], MeanOf(slot, named, c, union_indices[i]));
    slot = Slot();
  }
  return absl::OkStatus();
}

// Merges the contributors' index-sorted runs of k entries, laid out in ascending worker id, into
// one index-sorted list. std::merge is stable and the left run always holds the lower worker
// ids, so equal indices end up in ascending worker id and each sum accumulates in that order.
template <typename Slot>
absl::Status AggregateChunkMerge(const std::vector<Contribution>& sorted, size_t t, size_t c,
                                 const NamedLayout& named, Scratch<Slot>* scratch,
                                 AggregateTensor* out) {
  const auto k = static_cast<size_t>(named.layout.topk);
  const size_t n = sorted.size() * k;
  scratch->merged.resize(n);
  scratch->spare.resize(n);
  Entry* a = scratch->merged.data();
  Entry* b = scratch->spare.data();
  for (size_t w = 0; w < sorted.size(); ++w) {
    const SparseTensor& tensor = sorted[w].payload->tensors[t];
    for (size_t i = 0; i < k; ++i) {
      const uint32_t index = tensor.indices[c * k + i];
      if (index >= named.layout.chunk_size()) return IndexOutOfRange(sorted[w], named, c, index);
      a[w * k + i] = Entry{index, tensor.values[c * k + i], sorted[w].samples};
    }
  }
  for (size_t width = k; width < n; width *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * width) {
      const size_t mid = std::min(lo + width, n);
      const size_t hi = std::min(lo + 2 * width, n);
      std::merge(a + lo, a + mid, a + mid, a + hi, b + lo, IndexLess);
    }
    std::swap(a, b);
  }
  for (size_t i = 0; i < n;) {
    const uint32_t index = a[i].index;
    Slot slot;
    for (; i < n && a[i].index == index; ++i) slot.Add(a[i].value, a[i].samples);
    DEMOD_ASSIGN_OR_RETURN(const float mean, MeanOf(slot, named, c, index));
    out->indices.push_back(index);
    out->values.push_back(mean);
  }
  return absl::OkStatus();
}

// A chunk of a single contributor is its own union, and each mean that of one value (the
// value itself, or the float bound for an infinity, as MeanOf gives). When its indices are
// increasing and in range, as the decoder leaves them, it is taken as is, without the scratch;
// returns false, having appended nothing, when they are not (the general paths then sort them
// or report the bad index).
template <typename Slot>
absl::StatusOr<bool> AggregateChunkAlone(const Contribution& only, size_t t, size_t c,
                                         const NamedLayout& named, AggregateTensor* out) {
  const auto k = static_cast<size_t>(named.layout.topk);
  if (k == 0) return true;  // no entries (the wire's layouts have k >= 1)
  const SparseTensor& tensor = only.payload->tensors[t];
  const uint32_t* indices = tensor.indices.data() + c * k;
  const float* values = tensor.values.data() + c * k;
  size_t unordered = 0;
  for (size_t i = 1; i < k; ++i) unordered += indices[i] <= indices[i - 1];
  if (unordered != 0 || indices[k - 1] >= static_cast<uint64_t>(named.layout.chunk_size())) {
    return false;
  }
  out->indices.insert(out->indices.end(), indices, indices + k);
  float* means = Extend(out->values, k);
  for (size_t i = 0; i < k; ++i) {
    Slot slot;
    slot.Add(values[i], only.samples);
    DEMOD_ASSIGN_OR_RETURN(means[i], MeanOf(slot, named, c, indices[i]));
  }
  return true;
}

template <typename Slot>
absl::Status AggregateTensorEntries(const std::vector<Contribution>& sorted, size_t t,
                                    const NamedLayout& named, ValueEncoding encoding,
                                    Scratch<Slot>* scratch, AggregateTensor* out) {
  const ChunkLayout& layout = named.layout;
  const auto num_chunks = static_cast<size_t>(layout.num_chunks());
  const bool dense = layout.chunk_size() <= kDenseChunkLimit;
  if (dense) {
    const auto chunk_size = static_cast<size_t>(layout.chunk_size());
    if (scratch->slots.size() < chunk_size) {
      scratch->slots.resize(chunk_size);
      scratch->touched.resize((chunk_size + 63) / 64, 0);
      scratch->summary.resize((chunk_size + 4095) / 4096, 0);
    }
  }
  out->chunk_offsets.resize(num_chunks + 1);
  out->chunk_offsets[0] = 0;
  const size_t union_lower_bound = num_chunks * static_cast<size_t>(layout.topk);
  out->indices.reserve(union_lower_bound);
  out->values.reserve(union_lower_bound);
  for (size_t c = 0; c < num_chunks; ++c) {
    bool taken = false;
    if (sorted.size() == 1) {
      DEMOD_ASSIGN_OR_RETURN(taken, AggregateChunkAlone<Slot>(sorted[0], t, c, named, out));
    }
    if (!taken) {
      DEMOD_RETURN_IF_ERROR(dense ? AggregateChunkDense(sorted, t, c, named, scratch, out)
                                  : AggregateChunkMerge(sorted, t, c, named, scratch, out));
    }
    out->chunk_offsets[c + 1] = out->indices.size();
  }
  QuantizeValues(encoding, out->values.data(), out->values.size());
  return absl::OkStatus();
}

// bf16 or f16 when every contributor sent that, sign means when every one sent signs and they
// count equally (the means are then tallies), f32 otherwise (see StepAggregate).
ValueEncoding EncodingOf(const std::vector<Contribution>& sorted, Weighting weighting) {
  const ValueEncoding first = sorted[0].payload->encoding;
  for (const Contribution& contribution : sorted) {
    if (contribution.payload->encoding != first) return ValueEncoding::kFloat32;
  }
  const ValueEncoding encoding = AggregateEncoding(first);
  if (encoding == ValueEncoding::kSignMean &&
      (weighting != Weighting::kEqual || sorted.size() > SignMeanTable::kMaxContributors)) {
    return ValueEncoding::kFloat32;
  }
  return encoding;
}

// Below this many entries per thread, handing work to a helper costs more than it saves.
// Helpers are pooled (run_in_parallel.h), and 8192 entries take 40 to 100 us: one worker's
// step on the benchmark GPT (38,600 entries, the optimizer benchmark's in-process exchange) is
// split in two, 430 -> 240 us for sign payloads (demod-bench-codec, BM_AggregateAndEncode/1/1/3).
constexpr size_t kEntriesPerThread = size_t{1} << 13;
constexpr size_t kMaxAggregationThreads = 4;

// What every aggregation of a step starts from: its contributions in ascending worker id,
// checked, and the encoding the means are rounded to.
struct Prepared {
  std::vector<Contribution> sorted;
  ValueEncoding encoding;
  Weighting weighting;
};

absl::StatusOr<Prepared> Prepare(const std::vector<Contribution>& contributions,
                                 const LayoutTable& table, Weighting weighting) {
  if (contributions.empty()) return absl::InvalidArgumentError("no contributions to aggregate");
  Prepared prepared{contributions, ValueEncoding::kFloat32, weighting};
  std::sort(prepared.sorted.begin(), prepared.sorted.end(),
            [](const Contribution& a, const Contribution& b) { return a.worker_id < b.worker_id; });
  DEMOD_RETURN_IF_ERROR(CheckContributions(prepared.sorted, table, weighting));
  prepared.encoding = EncodingOf(prepared.sorted, weighting);
  return prepared;
}

// Aggregates every tensor, handing each result to `take(part, t, result)` on the thread that
// computed it. Tensors are independent: large steps split them into `parts` contiguous ranges
// of about equal entries, one thread each (range `part` on thread `part`). Each tensor is
// computed exactly as on one thread, so the results do not depend on the split; the first
// failing tensor in table order is reported.
absl::Status AggregateTensors(
    const Prepared& prepared, const LayoutTable& table, const TaskRunner& runner, size_t* parts,
    absl::FunctionRef<absl::Status(size_t part, size_t t, AggregateTensor& result)> take) {
  const std::vector<Contribution>& sorted = prepared.sorted;
  uint64_t total = 0;
  for (const NamedLayout& t : table) total += static_cast<uint64_t>(t.layout.num_selected());
  total *= sorted.size();
  const size_t threads = ThreadsFor(static_cast<size_t>(total), kEntriesPerThread,
                                    std::min(kMaxAggregationThreads, table.size()), runner);
  // Tensors [bounds[i], bounds[i + 1]) go to thread i.
  const std::vector<size_t> bounds = ContiguousShares(table.size(), threads, [&](size_t t) {
    return static_cast<uint64_t>(table[t].layout.num_selected()) * sorted.size();
  });
  *parts = threads;
  std::vector<absl::Status> status(table.size());
  const auto aggregate_part = [&](size_t part, auto* scratch) {  // reused across tensors
    AggregateTensor result;
    for (size_t t = bounds[part]; t < bounds[part + 1]; ++t) {
      result.chunk_offsets.clear();
      result.indices.clear();
      result.values.clear();
      status[t] = AggregateTensorEntries(sorted, t, table[t], prepared.encoding, scratch, &result);
      if (status[t].ok()) status[t] = take(part, t, result);
      if (!status[t].ok()) return;
    }
  };
  runner.Run(threads, [&](size_t part) {
    if (prepared.weighting == Weighting::kSamples) {
      Scratch<SamplesSlot> scratch;
      aggregate_part(part, &scratch);
    } else {
      Scratch<EqualSlot> scratch;
      aggregate_part(part, &scratch);
    }
  });
  for (const absl::Status& s : status) DEMOD_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

std::vector<uint32_t> ContributorIds(const std::vector<Contribution>& sorted) {
  std::vector<uint32_t> ids;
  ids.reserve(sorted.size());
  for (const Contribution& contribution : sorted) ids.push_back(contribution.worker_id);
  return ids;
}

}  // namespace

absl::StatusOr<StepAggregate> AggregateStep(const std::vector<Contribution>& contributions,
                                            const LayoutTable& table, Weighting weighting,
                                            const TaskRunner& runner) {
  DEMOD_ASSIGN_OR_RETURN(const Prepared prepared, Prepare(contributions, table, weighting));
  StepAggregate aggregate;
  aggregate.step = prepared.sorted[0].payload->step;
  aggregate.encoding = prepared.encoding;
  aggregate.contributors = ContributorIds(prepared.sorted);
  aggregate.tensors.resize(table.size());
  size_t parts = 0;
  DEMOD_RETURN_IF_ERROR(AggregateTensors(prepared, table, runner, &parts,
                                         [&aggregate](size_t, size_t t, AggregateTensor& result) {
                                           aggregate.tensors[t] = std::move(result);
                                           return absl::OkStatus();
                                         }));
  return aggregate;
}

absl::StatusOr<std::string> AggregateStepEncoded(const std::vector<Contribution>& contributions,
                                                 const LayoutTable& table, Weighting weighting,
                                                 const TaskRunner& runner) {
  DEMOD_ASSIGN_OR_RETURN(const Prepared prepared, Prepare(contributions, table, weighting));
  std::vector<std::string> sections(kMaxAggregationThreads);  // one per part
  size_t parts = 0;
  DEMOD_RETURN_IF_ERROR(AggregateTensors(
      prepared, table, runner, &parts,
      [&sections, &table, &prepared](size_t part, size_t t, AggregateTensor& result) {
        return AppendAggregateTensorSection(table[t], result, prepared.encoding,
                                            prepared.sorted.size(), &sections[part]);
      }));
  sections.resize(parts);
  return FinishStepAggregate(prepared.sorted[0].payload->step, prepared.encoding,
                             ContributorIds(prepared.sorted), table, sections);
}

}  // namespace demod
