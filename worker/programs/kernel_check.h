// Part 3 of demod-device-check: the CUDA kernels (worker/optimizer/cuda_updates.h) against the
// CPU routines they must reproduce, bit for bit, over random layouts, value encodings and
// contributor counts, for DeMo's sparse signed step and the dense AdamW update; then their
// speed against the CPU routines on the same machine, on the tensors of a GPT of about 125M
// parameters.
#ifndef DEMOD_WORKER_PROGRAMS_KERNEL_CHECK_H_
#define DEMOD_WORKER_PROGRAMS_KERNEL_CHECK_H_

#include <cstdint>
#include <random>

#include "absl/status/statusor.h"
#include "common/chunk_layout.h"
#include "common/sparse_payload.h"

namespace demod {

// How an aggregate's values were carried: f32 means, means rounded to bf16, or sign means (an
// integer in [-c, c] over the c contributors).
enum class AggregateValues { kFloat32, kBFloat16, kSignMean };

// A random aggregate as `contributors` workers' top-k selections merge: per chunk, the union of
// their index sets, ascending, with normal values (standard deviation 1e-3) carried as `values`.
AggregateTensor RandomMergedAggregate(const ChunkLayout& layout, int contributors,
                                      AggregateValues values, std::mt19937_64& rng);

struct KernelCheckOptions {
  int cases = 300;       // random layouts for each of the two updates
  uint64_t seed = 1;     // of the random layouts and values
  int timing_runs = 10;  // of each routine on the 125M layouts; 0 skips the timing
};

// True when every case matched bit for bit; FAILED_PRECONDITION when this is not a CUDA build
// (DEMOD_WITH_CUDA) or no CUDA device is present; INTERNAL for a CUDA error.
absl::StatusOr<bool> CheckCudaKernels(const KernelCheckOptions& options);

}  // namespace demod

#endif  // DEMOD_WORKER_PROGRAMS_KERNEL_CHECK_H_
