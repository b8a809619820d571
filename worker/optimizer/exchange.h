// The narrow interface between the DeMo optimizer and whatever carries its compressed
// momentum to the other workers: an in-process hub (tests, replay) or the coordinator client.
//
// Per step the optimizer hands over ONE encoded StepPayload for all its tensors
// (common/payload_codec.h) and gets back the aggregate for every tensor. Implementations
// validate what they receive; the optimizer trusts a returned aggregate to match its table.
//
// An Exchange is used by one optimizer, from one thread at a time.
#ifndef DEMOD_WORKER_OPTIMIZER_EXCHANGE_H_
#define DEMOD_WORKER_OPTIMIZER_EXCHANGE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sparse_payload.h"

namespace demod {

struct ExchangeResult {
  StepAggregate aggregate;
  // False when this worker's payload missed the step (it arrived late, say): the optimizer
  // puts what it selected back into its momentum so the information is sent again later.
  bool own_contribution_included = true;
  int64_t bytes_received = 0;  // encoded aggregate size, for bandwidth accounting
};

class Exchange {
 public:
  virtual ~Exchange() = default;

  // Called once, before the first step, with the optimizer's tensor table. Fails with
  // FAILED_PRECONDITION when it differs from the run's, naming the first differing tensor.
  virtual absl::Status Register(const LayoutTable& table) = 0;

  // Sends `payload` (an encoded StepPayload for `step`) and blocks until the step's aggregate
  // is known.
  virtual absl::StatusOr<ExchangeResult> ExchangeStep(int64_t step, std::string payload) = 0;
};

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_EXCHANGE_H_
