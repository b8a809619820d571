// In-memory forms of what crosses the wire each step (the byte forms are in payload_codec.h).
//
// A worker's StepPayload holds, for every tensor of the run's tensor table (in table order),
// exactly layout.topk entries per chunk, chunk after chunk, with indices strictly increasing
// within each chunk. An index is the position inside its chunk (i * chunk_cols + j).
//
// A StepAggregate holds, for every tensor, the union of the coefficients the contributors
// selected, each with the mean of the values sent for it (rounded to the aggregate's
// encoding), sorted by (chunk, index).
//
// Plain values; no internal synchronisation.
#ifndef DEMOD_COMMON_SPARSE_PAYLOAD_H_
#define DEMOD_COMMON_SPARSE_PAYLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/chunk_layout.h"
#include "common/value_encoding.h"

namespace demod {

// One worker's selection for one tensor. values hold the decoded (dequantized) values.
struct SparseTensor {
  std::vector<uint32_t> indices;  // num_chunks * topk, chunk-major
  std::vector<float> values;      // same length
};

struct StepPayload {
  int64_t step = 0;
  ValueEncoding encoding = ValueEncoding::kFloat32;
  std::vector<SparseTensor> tensors;
};

// The aggregate for one tensor. Entries of chunk c are [chunk_offsets[c], chunk_offsets[c+1]).
struct AggregateTensor {
  std::vector<uint64_t> chunk_offsets;  // num_chunks + 1, starts at 0
  std::vector<uint32_t> indices;        // strictly increasing within each chunk
  std::vector<float> values;
};

struct StepAggregate {
  int64_t step = 0;
  // How the values travel: bf16 or f16 when every contributor sent that encoding (the means
  // are rounded to it, as precise as what was sent), sign-mean when every one sent signs and
  // they count equally, f32 otherwise. values hold exactly what decodes.
  ValueEncoding encoding = ValueEncoding::kFloat32;
  std::vector<uint32_t> contributors;  // worker ids whose payloads are included, ascending
  std::vector<AggregateTensor> tensors;
};

// One tensor of the run's table, as payloads are checked against it.
struct NamedLayout {
  std::string name;
  ChunkLayout layout;
};
// The run's tensors in table order.
using LayoutTable = std::vector<NamedLayout>;

}  // namespace demod

#endif  // DEMOD_COMMON_SPARSE_PAYLOAD_H_
