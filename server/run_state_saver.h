// Saves a run's state to its RunStore on a thread of its own, so that a step's aggregate need
// not wait for the disk: a save is a write and two fsyncs (1 to 2 ms on a local disk, more on a
// network volume), more than the coordinator's own work for a step.
//
// Submit hands over a state and returns at once. States are written in the order submitted,
// except that one still waiting when a newer one arrives is skipped: only the latest matters.
// WaitForSaves returns once every state submitted before the call has been written, or has
// failed. The destructor writes the last state submitted before it returns.
//
// A failed save goes to `on_error` (called on the saver's thread) and is not retried: the next
// Submit tries again, and until then the store holds the last state written.
//
// Thread-safe.
#ifndef DEMOD_SERVER_RUN_STATE_SAVER_H_
#define DEMOD_SERVER_RUN_STATE_SAVER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/run_store.h"

namespace demod {

class RunStateSaver {
 public:
  RunStateSaver(RunStore store, std::function<void(const absl::Status&)> on_error);
  ~RunStateSaver();

  RunStateSaver(const RunStateSaver&) = delete;
  RunStateSaver& operator=(const RunStateSaver&) = delete;

  void Submit(PersistedRun run) ABSL_LOCKS_EXCLUDED(mu_);
  void WaitForSaves() ABSL_LOCKS_EXCLUDED(mu_);

  const RunStore& store() const { return store_; }

 private:
  void WriteLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const RunStore store_;
  const std::function<void(const absl::Status&)> on_error_;

  absl::Mutex mu_;
  std::optional<PersistedRun> waiting_ ABSL_GUARDED_BY(mu_);
  // Submissions are numbered from 1; every one up to `settled_` has been written or failed
  // (or was skipped for a newer one that has).
  uint64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t settled_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar has_work_;       // a state is waiting, or stopping_
  absl::CondVar saves_settled_;  // settled_ moved
  std::thread writer_;           // last: starts once the members above exist
};

}  // namespace demod

#endif  // DEMOD_SERVER_RUN_STATE_SAVER_H_
