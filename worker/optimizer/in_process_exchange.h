// An Exchange between optimizers of one process: each worker thread holds an
// InProcessExchange bound to a shared InProcessHub. The last payload of a step to arrive
// decodes and validates all of them, aggregates them with common/'s deterministic
// aggregation, encodes the aggregate once, and every worker decodes those same bytes: the
// wire path of a real run, without the network. Serves tests and demod-replay.
//
// Thread-safe: the hub is shared by its workers' threads; each InProcessExchange is used by
// one thread.
#ifndef DEMOD_WORKER_OPTIMIZER_IN_PROCESS_EXCHANGE_H_
#define DEMOD_WORKER_OPTIMIZER_IN_PROCESS_EXCHANGE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/optimizer/exchange.h"

namespace demod {

class InProcessHub {
 public:
  // `timeout`: how long a worker waits for the others before DEADLINE_EXCEEDED.
  explicit InProcessHub(int num_workers, absl::Duration timeout = absl::Minutes(5));

  // Simulates a late payload: when it returns true for (worker, step), that worker's payload
  // is left out of the step's aggregate (and the worker is told so).
  void SetLeftOut(std::function<bool(uint32_t worker, int64_t step)> left_out);

  int num_workers() const { return num_workers_; }

 private:
  friend class InProcessExchange;

  struct Round {
    std::map<uint32_t, std::string> payloads;              // by worker id
    std::optional<absl::StatusOr<std::string>> aggregate;  // set once all arrived
    std::vector<uint32_t> contributors;
    int collected = 0;  // workers that have taken the result
  };

  struct Delivery {
    std::string aggregate_bytes;
    bool included = false;
  };

  absl::Status Register(const LayoutTable& table);
  absl::StatusOr<Delivery> Exchange(uint32_t worker, int64_t step, std::string payload);
  absl::StatusOr<std::string> CloseRound(int64_t step, Round& round,
                                         std::vector<uint32_t>* contributors)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int num_workers_;
  const absl::Duration timeout_;
  absl::Mutex mu_;
  std::optional<LayoutTable> table_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, Round> rounds_ ABSL_GUARDED_BY(mu_);
  std::function<bool(uint32_t, int64_t)> left_out_ ABSL_GUARDED_BY(mu_);
};

class InProcessExchange : public Exchange {
 public:
  // worker_id in [0, hub->num_workers()); the hub must outlive this.
  InProcessExchange(InProcessHub* hub, uint32_t worker_id);

  absl::Status Register(const LayoutTable& table) override;
  absl::StatusOr<ExchangeResult> ExchangeStep(int64_t step, std::string payload) override;

 private:
  InProcessHub* hub_;
  uint32_t worker_id_;
  std::optional<LayoutTable> table_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_IN_PROCESS_EXCHANGE_H_
