// Synthetic DeMo selections for the benchmarks: what N workers of one step send, without a
// model. Real workers select overlapping coefficients (the same model, similar data), so each
// step draws, per chunk, a set of candidate positions shared by all workers, and every worker
// picks its top-k among them; independent random picks over the whole chunk would make the
// aggregate the union of N unrelated selections, nearly dense at large N (the worst case,
// still available with per_chunk = 0).
//
// Thread-compatible (a generator per thread).
#ifndef DEMOD_BENCH_SYNTHETIC_SELECTION_H_
#define DEMOD_BENCH_SYNTHETIC_SELECTION_H_

#include <cstdint>
#include <random>
#include <vector>

#include "common/sparse_payload.h"

namespace demod {

// For one step, per tensor, the positions every chunk's selections are drawn from.
struct Candidates {
  std::vector<int64_t> per_chunk;                // by tensor; 0: the whole chunk
  std::vector<std::vector<uint32_t>> positions;  // by tensor, chunk-major
};

// `per_chunk` positions per chunk (clamped to [topk, chunk size]); 0 for the whole chunk.
Candidates DrawCandidates(const LayoutTable& table, int64_t per_chunk, std::mt19937_64& random);

// A worker's payload: topk distinct sorted positions per chunk out of the step's candidates,
// with normal values quantized to `encoding`.
StepPayload SelectPayload(const LayoutTable& table, const Candidates& candidates, int64_t step,
                          ValueEncoding encoding, std::mt19937_64& random);

}  // namespace demod

#endif  // DEMOD_BENCH_SYNTHETIC_SELECTION_H_
