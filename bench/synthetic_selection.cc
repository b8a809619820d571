#include "bench/synthetic_selection.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "common/value_encoding.h"
#include "tests/support/synthetic_payload.h"

namespace demod {

Candidates DrawCandidates(const LayoutTable& table, int64_t per_chunk, std::mt19937_64& random) {
  Candidates c;
  for (const NamedLayout& t : table) {
    const ChunkLayout& layout = t.layout;
    const int64_t n = per_chunk == 0 ? 0 : std::clamp(per_chunk, layout.topk, layout.chunk_size());
    c.per_chunk.push_back(n == layout.chunk_size() ? 0 : n);
    std::vector<uint32_t>& out = c.positions.emplace_back();
    if (c.per_chunk.back() == 0) continue;
    std::vector<uint32_t> all(layout.chunk_size());
    std::iota(all.begin(), all.end(), 0u);
    for (int64_t chunk = 0; chunk < layout.num_chunks(); ++chunk) {
      for (int64_t i = 0; i < n; ++i) {  // partial Fisher-Yates
        std::swap(all[i], all[std::uniform_int_distribution<int64_t>(i, all.size() - 1)(random)]);
      }
      out.insert(out.end(), all.begin(), all.begin() + n);
    }
  }
  return c;
}

// Tensors whose candidates are the whole chunk use SyntheticPayload's rule.
StepPayload SelectPayload(const LayoutTable& table, const Candidates& candidates, int64_t step,
                          ValueEncoding encoding, std::mt19937_64& random) {
  StepPayload payload = SyntheticPayload(table, step, encoding, random);
  std::normal_distribution<float> value(0.0f, 1.0f);
  std::vector<uint32_t> pool;
  for (size_t t = 0; t < table.size(); ++t) {
    const int64_t n = candidates.per_chunk[t];
    if (n == 0) continue;
    const ChunkLayout& layout = table[t].layout;
    SparseTensor& tensor = payload.tensors[t];
    for (int64_t chunk = 0; chunk < layout.num_chunks(); ++chunk) {
      const uint32_t* from = candidates.positions[t].data() + chunk * n;
      pool.assign(from, from + n);
      for (int64_t i = 0; i < layout.topk; ++i) {
        std::swap(pool[i], pool[std::uniform_int_distribution<int64_t>(i, n - 1)(random)]);
      }
      std::sort(pool.begin(), pool.begin() + layout.topk);
      std::copy(pool.begin(), pool.begin() + layout.topk,
                tensor.indices.begin() + chunk * layout.topk);
    }
    for (float& v : tensor.values) v = QuantizeValue(encoding, value(random));
  }
  return payload;
}

}  // namespace demod
