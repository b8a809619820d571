// The Exchange of a worker in a coordinated run: the optimizer's payload goes to the
// coordinator through a CoordinatorClient, and the step's aggregate comes back.
//
// While it waits for an aggregate it also serves what the coordinator asks in between:
// parameters for a joiner (the model's current parameters, those of the last applied step,
// since the optimizer is blocked in Step), and a resync notice, which the training loop acts
// on after the step (ReceiveParameters). A step's contribution counts when the worker is among
// the aggregate's contributors; otherwise the optimizer keeps it in momentum.
//
// ReceiveParameters is how a worker becomes current: at join (when the Welcome says
// receives_state) or after a resync. It loads the parameters a donor sent, applies the
// aggregates closed since (the coordinator sends them meanwhile) and returns the first step
// the worker contributes to.
//
// Used from the training loop's thread only.
#ifndef DEMOD_WORKER_TRAINING_COORDINATOR_EXCHANGE_H_
#define DEMOD_WORKER_TRAINING_COORDINATOR_EXCHANGE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "worker/client/coordinator_client.h"
#include "worker/client/state_donor.h"
#include "worker/optimizer/exchange.h"
#include "worker/optimizer/parameter_state.h"
#include "worker/optimizer/step_optimizer.h"

namespace demod {

class CoordinatorExchange final : public Exchange {
 public:
  // `client` and the tensors of `parameters` must outlive the exchange. `step_timeout`: how
  // long to wait for one message before giving up on the coordinator (DEADLINE_EXCEEDED).
  // `stop`, when set, is polled while waiting: a stop request ends the wait with CANCELLED.
  CoordinatorExchange(CoordinatorClient* client, std::vector<NamedTensor> parameters,
                      absl::Duration step_timeout, const std::atomic<bool>* stop = nullptr);

  // FAILED_PRECONDITION, naming the first difference, unless `table` is the run's: the one the
  // coordinator derives from the join's tensors and the run's optimizer settings.
  absl::Status Register(const LayoutTable& table) override;
  // UNAVAILABLE/ABORTED/... with the reason when the stream ended (shutdown, eviction);
  // OUT_OF_RANGE when the run finished first.
  absl::StatusOr<ExchangeResult> ExchangeStep(int64_t step, std::string payload) override;
  // The samples behind the payloads sent from now on (0: not said); see PayloadFrame.samples.
  void set_step_samples(uint32_t samples) { step_samples_ = samples; }

  // Serves what the coordinator has sent so far, without waiting. When the aggregate of `step`
  // is among it, the step closed before this worker computed its payload (it is behind: slower
  // than the deadline, or its last payload was late), and a payload now would be refused as
  // late: applies the aggregate through `optimizer` (CatchUp, at the learning rate it has) and
  // returns true. False otherwise, and while a resync is pending.
  absl::StatusOr<bool> CatchUpIfClosed(int64_t step, StepOptimizer& optimizer);

  // Waits until the worker may contribute and returns that step. With `expect_state`, loads
  // the parameters that arrive and catches up on later aggregates through `optimizer`
  // (`lr_at(step)` gives each step's learning rate); without, only waits for ACTIVE (a seed).
  absl::StatusOr<int64_t> ReceiveParameters(bool expect_state, StepOptimizer& optimizer,
                                            const std::function<double(int64_t)>& lr_at);

  // What a donor sends and a joiner loads: the parameters given at construction, plus the
  // optimizer's shared state (once the optimizer exists).
  void set_state_tensors(std::vector<NamedTensor> tensors) { parameters_ = std::move(tensors); }

  // The coordinator said this worker's parameters diverged; ReceiveParameters comes next.
  bool resync_requested() const { return resync_requested_; }
  // The run finished (every step is done); the stream ends.
  bool finished() const { return finished_; }
  int64_t parameters_sent() const { return parameters_sent_; }
  // With batch balancing, the samples per step the coordinator last asked for (0: none yet).
  uint64_t batch_samples() const { return batch_samples_; }
  // The workers whose payloads made up the last aggregate, ascending.
  const std::vector<uint32_t>& last_contributors() const { return last_contributors_; }

 private:
  // Serves an event that is not what the caller waits for. Errors end the exchange.
  absl::Status Serve(ClientEvent& event);
  absl::StatusOr<ClientEvent> NextEvent();
  // The aggregate of `step` (which has arrived), dropping it and any older ones.
  std::string TakePendingAggregate(int64_t step);

  CoordinatorClient* const client_;
  std::vector<NamedTensor> parameters_;  // with the optimizer's shared state
  const absl::Duration step_timeout_;
  const std::atomic<bool>* const stop_;
  LayoutTable table_;
  bool resync_requested_ = false;
  bool finished_ = false;
  int64_t parameters_sent_ = 0;
  uint64_t batch_samples_ = 0;
  uint32_t step_samples_ = 0;
  StateDonor donor_;
  int64_t applied_step_ = 0;  // the step the model's parameters are at
  std::vector<uint32_t> last_contributors_;
  // Between a resync notice and ReceiveParameters: the fresh parameters if they came early, and
  // the aggregates applied meanwhile (the parameters may be of an earlier step).
  std::optional<ClientEvent> resync_state_;
  std::map<int64_t, std::string> applied_since_resync_;
  // Aggregates that arrived ahead of the step being waited for (a joiner's catch-up).
  std::map<int64_t, std::string> pending_aggregates_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_TRAINING_COORDINATOR_EXCHANGE_H_
