// The byte forms of StepPayload (worker -> coordinator) and StepAggregate (coordinator ->
// workers). The format, little-endian and versioned, is specified in docs/wire-format.md;
// this file and payload_codec.cc are its only home.
//
// Decoders trust nothing: they check magic, version, lengths and the CRC-32C before reading
// a value, then check every tensor against the run's LayoutTable (chunk count, k, index width,
// indices in range and strictly increasing within a chunk, finite values). Any violation is
// an INVALID_ARGUMENT (DATA_LOSS for a checksum mismatch) whose message names the tensor and
// the reason, e.g. "tensor 'h.0.fc.weight' chunk 7: index 4101 out of range for chunk of
// 4096". The error reported is the first in message order (a decoder locates every tensor
// before reading their entries, over several threads, but reports what one pass would), and
// nothing of a bad message is returned. A table whose tensors exceed the format's limits
// (more than 2^32 - 1 chunks, or chunks of more than 2^32 - 1 coefficients) is rejected the
// same way.
//
// Pure functions; thread-safe.
#ifndef DEMOD_COMMON_PAYLOAD_CODEC_H_
#define DEMOD_COMMON_PAYLOAD_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/run_in_parallel.h"
#include "common/sparse_payload.h"

namespace demod {

// Bytes of the smallest unsigned type that holds every index of a chunk of `chunk_size`
// coefficients (indices < chunk_size): 1, 2 or 4.
int IndexWidth(int64_t chunk_size);

// Bytes of the smallest unsigned type that holds an aggregate's per-chunk entry count, which
// may equal chunk_size (a chunk every coefficient of which was selected): 1, 2 or 4.
int CountWidth(int64_t chunk_size);

// Encodes `payload` (values quantized with payload.encoding). Fails with INVALID_ARGUMENT if the
// payload does not match `table` (same checks as the decoder), so a bad payload is caught
// where it is made.
absl::StatusOr<std::string> EncodeStepPayload(const StepPayload& payload, const LayoutTable& table);
// Decoders read and check their tensors over `runner`'s threads when the message is large.
absl::StatusOr<StepPayload> DecodeStepPayload(absl::string_view bytes, const LayoutTable& table,
                                              const TaskRunner& runner = HelperThreads());

// Aggregate values travel in the aggregate's encoding: f32, bf16, f16 or sign-mean (1 to
// SignMeanTable::kMaxContributors contributors, each value one of their table's).
absl::StatusOr<std::string> EncodeStepAggregate(const StepAggregate& aggregate,
                                                const LayoutTable& table);
absl::StatusOr<StepAggregate> DecodeStepAggregate(absl::string_view bytes, const LayoutTable& table,
                                                  const TaskRunner& runner = HelperThreads());

// Checks an in-memory payload against the table (what the decoder checks after parsing).
absl::Status ValidateStepPayload(const StepPayload& payload, const LayoutTable& table);

// The same for an aggregate: an encoding of f32, bf16 or f16; contributors strictly increasing;
// per tensor, num_chunks + 1 chunk offsets from 0, non-decreasing, ending at indices.size() ==
// values.size(), at most chunk_size entries per chunk, indices in range and strictly increasing,
// finite values, each exactly representable in the encoding.
absl::Status ValidateStepAggregate(const StepAggregate& aggregate, const LayoutTable& table);

// An aggregate's bytes built tensor by tensor, so that each tensor can be encoded by the thread
// that aggregated it (AggregateStepEncoded, common/aggregation.h). EncodeStepAggregate is
// FinishStepAggregate over every tensor's section, appended in table order.
//
// Appends the tensor's section to `out`, after the checks ValidateStepAggregate makes of it;
// on an error `out` is left as it was. `contributors`: how many the aggregate has (kSignMean's
// codes depend on it).
absl::Status AppendAggregateTensorSection(const NamedLayout& named, const AggregateTensor& tensor,
                                          ValueEncoding encoding, uint64_t contributors,
                                          std::string* out);
// The whole aggregate: header and contributors (checked as ValidateStepAggregate checks them),
// then `sections` (every tensor's section in table order, split across the strings in any
// way), then the CRC.
absl::StatusOr<std::string> FinishStepAggregate(int64_t step, ValueEncoding encoding,
                                                const std::vector<uint32_t>& contributors,
                                                const LayoutTable& table,
                                                const std::vector<std::string>& sections);

}  // namespace demod

#endif  // DEMOD_COMMON_PAYLOAD_CODEC_H_
