#include "worker/optimizer/sparse_step_staging.h"

#include <algorithm>
#include <cstring>

#include "worker/optimizer/cpu_kernels.h"

namespace demod {
namespace {

// Where each part of the buffer starts (8-byte aligned).
struct Sections {
  size_t tensors, chunk_tensor, chunk_in_tensor, offsets, indices, values, end;
};

template <typename T>
size_t Reserve(size_t& end, size_t count) {
  const size_t at = (end + 7) / 8 * 8;
  end = at + count * sizeof(T);
  return at;
}

Sections Lay(const std::vector<StagedTensor>& tensors, int64_t* total_chunks, size_t* entries) {
  *total_chunks = 0;
  *entries = 0;
  for (const StagedTensor& t : tensors) {
    *total_chunks += t.layout->num_chunks();
    *entries += t.aggregate->indices.size();
  }
  Sections s;
  size_t end = 0;
  s.tensors = Reserve<cuda::SignedStepTensor>(end, tensors.size());
  s.chunk_tensor = Reserve<int32_t>(end, *total_chunks);
  s.chunk_in_tensor = Reserve<int64_t>(end, *total_chunks);
  s.offsets = Reserve<uint64_t>(end, *total_chunks + 1);
  s.indices = Reserve<uint32_t>(end, *entries);
  s.values = Reserve<float>(end, *entries);
  s.end = end;
  return s;
}

template <typename T>
T* At(uint8_t* base, size_t offset) {
  return reinterpret_cast<T*>(base + offset);
}

}  // namespace

size_t SparseSignedStepsBytes(const std::vector<StagedTensor>& tensors) {
  int64_t total_chunks;
  size_t entries;
  return Lay(tensors, &total_chunks, &entries).end;
}

cuda::SparseSignedSteps StageSparseSignedSteps(const std::vector<StagedTensor>& tensors,
                                               uint8_t* host, uint8_t* device) {
  int64_t total_chunks;
  size_t entries;
  const Sections at = Lay(tensors, &total_chunks, &entries);
  cuda::SparseSignedSteps steps;
  int64_t chunk = 0;
  uint64_t entry = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const StagedTensor& t = tensors[k];
    const AggregateTensor& agg = *t.aggregate;
    At<cuda::SignedStepTensor>(host, at.tensors)[k] = {t.param, t.f_rows_t, t.f_cols_t,
                                                       cpu::GeometryOf(*t.layout)};
    for (int64_t c = 0; c < t.layout->num_chunks(); ++c, ++chunk) {
      At<int32_t>(host, at.chunk_tensor)[chunk] = static_cast<int32_t>(k);
      At<int64_t>(host, at.chunk_in_tensor)[chunk] = c;
      At<uint64_t>(host, at.offsets)[chunk] = entry + agg.chunk_offsets[c];
    }
    std::memcpy(At<uint32_t>(host, at.indices) + entry, agg.indices.data(),
                agg.indices.size() * sizeof(uint32_t));
    std::memcpy(At<float>(host, at.values) + entry, agg.values.data(),
                agg.values.size() * sizeof(float));
    entry += agg.indices.size();
    steps.max_chunk_size = std::max(steps.max_chunk_size, t.layout->chunk_size());
    steps.max_chunk_cols = std::max(steps.max_chunk_cols, t.layout->chunk_cols);
  }
  At<uint64_t>(host, at.offsets)[total_chunks] = entry;
  steps.tensors = At<cuda::SignedStepTensor>(device, at.tensors);
  steps.chunk_tensor = At<int32_t>(device, at.chunk_tensor);
  steps.chunk_in_tensor = At<int64_t>(device, at.chunk_in_tensor);
  steps.chunk_offsets = At<uint64_t>(device, at.offsets);
  steps.indices = At<uint32_t>(device, at.indices);
  steps.values = At<float>(device, at.values);
  steps.total_chunks = total_chunks;
  return steps;
}

}  // namespace demod
