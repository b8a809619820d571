#include "tests/support/synthetic_payload.h"

#include <algorithm>
#include <numeric>

namespace demod {

StepPayload SyntheticPayload(const LayoutTable& table, int64_t step, ValueEncoding encoding,
                             std::mt19937_64& random) {
  StepPayload payload;
  payload.step = step;
  payload.encoding = encoding;
  std::normal_distribution<float> value(0.0f, 1.0f);
  for (const NamedLayout& t : table) {
    const ChunkLayout& layout = t.layout;
    SparseTensor tensor;
    std::vector<uint32_t> positions(layout.chunk_size());
    std::iota(positions.begin(), positions.end(), 0u);
    for (int64_t c = 0; c < layout.num_chunks(); ++c) {
      // A partial Fisher-Yates shuffle picks topk distinct positions.
      for (int64_t i = 0; i < layout.topk; ++i) {
        std::uniform_int_distribution<int64_t> pick(i, layout.chunk_size() - 1);
        std::swap(positions[i], positions[pick(random)]);
      }
      std::vector<uint32_t> chosen(positions.begin(), positions.begin() + layout.topk);
      std::sort(chosen.begin(), chosen.end());
      for (uint32_t index : chosen) {
        tensor.indices.push_back(index);
        tensor.values.push_back(QuantizeValue(encoding, value(random)));
      }
    }
    payload.tensors.push_back(std::move(tensor));
  }
  return payload;
}

google::protobuf::RepeatedPtrField<v1::TensorSpec> TensorSpecsOf(
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes) {
  google::protobuf::RepeatedPtrField<v1::TensorSpec> specs;
  for (const auto& [name, shape] : shapes) {
    v1::TensorSpec* spec = specs.Add();
    spec->set_name(name);
    for (int64_t d : shape) spec->add_shape(d);
    spec->set_dtype(v1::DTYPE_FLOAT32);
  }
  return specs;
}

}  // namespace demod
