// Aggregation of several workers' payloads for one step, with the reference DeMo semantics:
// for each coefficient, the mean of the values sent for it by the workers that selected it
// (a coefficient chosen by one worker keeps that worker's value); unselected ones are absent.
// Weighting::kSamples weighs each value by the samples behind its payload instead (a worker
// that computed more of the step's batch counts for more; still, a coefficient chosen by one
// worker keeps that worker's value): sum(samples * value) / sum(samples), in double.
// When every payload is bf16 (or f16) the means are rounded to it, and the aggregate travels so
// (StepAggregate::encoding); the equal means of sign payloads travel as sign-mean codes.
//
// Determinism: contributions are combined in ascending worker id, whatever order they arrive
// in, and the output is sorted by (chunk, index). Every caller that aggregates the same set of
// payloads gets bit-identical values.
//
// Pure functions; thread-safe. Large steps spread their tensors over a few threads of `runner`
// (HelperThreads() unless the caller has a pool of its own, see run_in_parallel.h).
#ifndef DEMOD_COMMON_AGGREGATION_H_
#define DEMOD_COMMON_AGGREGATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/run_in_parallel.h"
#include "common/sparse_payload.h"

namespace demod {

// The most samples one contribution may weigh (a float times it is exact in double).
inline constexpr uint32_t kMaxContributionSamples = uint32_t{1} << 24;

struct Contribution {
  uint32_t worker_id = 0;
  const StepPayload* payload = nullptr;  // validated against the table; not owned
  uint32_t samples = 0;  // behind the payload's gradient; its weight under Weighting::kSamples
};

// How the values sent for one coefficient are combined (RunConfig's batch.weighting).
enum class Weighting {
  kEqual,    // their plain mean: every contribution counts the same (the reference's rule)
  kSamples,  // their mean weighted by the contributions' samples
};

// Fails with INVALID_ARGUMENT when contributions is empty, a payload is null, two share a worker
// id, their steps differ, under kSamples a contribution's samples are not in [1, 2^24], a payload's
// tensor count or a tensor's entry count does not match the table, or an index is out of its
// chunk's range. A sum that overflows float32 gives a mean of
// +-FLT_MAX (the mean of finite values is within that bound). Payloads that break
// the table's other rules (order within a chunk, finite values) give a deterministic but
// meaningless aggregate: validate them first (DecodeStepPayload does).
absl::StatusOr<StepAggregate> AggregateStep(const std::vector<Contribution>& contributions,
                                            const LayoutTable& table,
                                            Weighting weighting = Weighting::kEqual,
                                            const TaskRunner& runner = HelperThreads());

// The bytes EncodeStepAggregate(AggregateStep(...)) gives, and an error wherever either would
// fail; but each thread encodes the tensors it aggregated while they are in its cache, and the
// step is never held whole as a StepAggregate. What the coordinator sends.
absl::StatusOr<std::string> AggregateStepEncoded(const std::vector<Contribution>& contributions,
                                                 const LayoutTable& table,
                                                 Weighting weighting = Weighting::kEqual,
                                                 const TaskRunner& runner = HelperThreads());

}  // namespace demod

#endif  // DEMOD_COMMON_AGGREGATION_H_
