#include "server/run_state_saver.h"

#include <utility>

namespace demod {

RunStateSaver::RunStateSaver(RunStore store, std::function<void(const absl::Status&)> on_error)
    : store_(std::move(store)), on_error_(std::move(on_error)), writer_([this] { WriteLoop(); }) {}

RunStateSaver::~RunStateSaver() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    has_work_.Signal();
  }
  writer_.join();
}

void RunStateSaver::Submit(PersistedRun run) {
  absl::MutexLock lock(&mu_);
  waiting_ = std::move(run);
  ++submitted_;
  has_work_.Signal();
}

void RunStateSaver::WaitForSaves() {
  absl::MutexLock lock(&mu_);
  const uint64_t target = submitted_;
  while (settled_ < target) saves_settled_.Wait(&mu_);
}

void RunStateSaver::WriteLoop() {
  while (true) {
    PersistedRun run;
    uint64_t number;
    {
      absl::MutexLock lock(&mu_);
      while (!waiting_.has_value() && !stopping_) has_work_.Wait(&mu_);
      if (!waiting_.has_value()) return;  // stopping, with everything written
      run = *std::move(waiting_);
      waiting_.reset();
      number = submitted_;
    }
    absl::Status saved = store_.Save(run);
    if (!saved.ok() && on_error_) on_error_(saved);
    absl::MutexLock lock(&mu_);
    settled_ = number;
    saves_settled_.SignalAll();
  }
}

}  // namespace demod
