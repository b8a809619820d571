#include "common/run_in_parallel.h"

#include <algorithm>
#include <deque>
#include <system_error>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace demod {
namespace {

// One RunInParallel call: its task, and how many of its helper tasks are not done yet. Lives
// on the caller's stack; guarded by the pool's mutex, which outlives every call.
struct Call {
  absl::FunctionRef<void(size_t)> task;
  size_t unfinished;
};

// Helper threads kept for reuse: starting and joining a thread costs about 50 us on the
// development machine, several times what waking a waiting one costs, and the coordinator
// spreads work over threads twice per step. Threads are started as calls need them, up to
// kMaxHelpers, and then wait for work for the rest of the process. A task no helper takes is
// taken back by its own caller, so a call never waits for a helper to come free.
class HelperPool {
 public:
  static constexpr size_t kMaxHelpers = 16;

  // Never destroyed: helpers wait on it until the process ends.
  static HelperPool& Get() {
    static HelperPool* const pool = new HelperPool();
    return *pool;
  }

  void Run(size_t n, absl::FunctionRef<void(size_t)> task) {
    Call call{task, n - 1};
    {
      absl::MutexLock lock(&mu_);
      for (size_t i = 1; i < n; ++i) queue_.push_back({&call, i});
      StartHelpersLocked();
    }
    task(0);
    absl::MutexLock lock(&mu_);
    while (true) {
      auto mine = std::find_if(queue_.begin(), queue_.end(),
                               [&call](const Item& item) { return item.call == &call; });
      if (mine == queue_.end()) break;
      const size_t index = mine->index;
      queue_.erase(mine);
      mu_.Unlock();
      task(index);
      mu_.Lock();
      --call.unfinished;
    }
    while (call.unfinished > 0) finished_.Wait(&mu_);
  }

 private:
  struct Item {
    Call* call;
    size_t index;
  };

  HelperPool() = default;

  // Enough helpers for what is queued, within kMaxHelpers. A helper that cannot be started
  // (the process is out of threads) leaves its task to the caller.
  void StartHelpersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (idle_ + starting_ < queue_.size() && helpers_ < kMaxHelpers) {
      try {
        std::thread([this] { Serve(); }).detach();
      } catch (const std::system_error&) {
        break;
      }
      ++helpers_;
      ++starting_;
    }
    has_work_.SignalAll();
  }

  void Serve() {
    absl::MutexLock lock(&mu_);
    --starting_;
    while (true) {
      while (queue_.empty()) {
        ++idle_;
        has_work_.Wait(&mu_);
        --idle_;
      }
      const Item item = queue_.front();
      queue_.pop_front();
      mu_.Unlock();
      item.call->task(item.index);
      mu_.Lock();
      // The caller may return (and free the call) as soon as this count reaches 0 and the
      // mutex is released: nothing touches `item.call` after this.
      if (--item.call->unfinished == 0) finished_.SignalAll();
    }
  }

  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t helpers_ ABSL_GUARDED_BY(mu_) = 0;   // started, ever
  size_t starting_ ABSL_GUARDED_BY(mu_) = 0;  // started, not yet serving
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;      // waiting for work
  absl::CondVar has_work_;
  absl::CondVar finished_;  // some call's last helper task finished
};

}  // namespace

void RunInParallel(size_t n, absl::FunctionRef<void(size_t)> task) {
  if (n == 0) return;
  if (n == 1) {
    task(0);
    return;
  }
  HelperPool::Get().Run(n, task);
}

namespace {

size_t Cores() {
  // Asked once: glibc reads sysfs for it on every call, tens of microseconds on the critical
  // path of a step that aggregates in a few hundred.
  static const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return cores;
}

class HelperThreadRunner : public TaskRunner {
 public:
  size_t threads() const override { return Cores(); }
  void Run(size_t n, absl::FunctionRef<void(size_t)> task) const override {
    RunInParallel(n, task);
  }
};

class CallingThreadRunner : public TaskRunner {
 public:
  size_t threads() const override { return 1; }
  void Run(size_t n, absl::FunctionRef<void(size_t)> task) const override {
    for (size_t i = 0; i < n; ++i) task(i);
  }
};

}  // namespace

const TaskRunner& CallingThread() {
  static const CallingThreadRunner* const runner = new CallingThreadRunner();
  return *runner;
}

const TaskRunner& HelperThreads() {
  static const HelperThreadRunner* const runner = new HelperThreadRunner();
  return *runner;
}

size_t ThreadsFor(size_t work, size_t work_per_thread, size_t max_threads) {
  return ThreadsFor(work, work_per_thread, max_threads, HelperThreads());
}

size_t ThreadsFor(size_t work, size_t work_per_thread, size_t max_threads,
                  const TaskRunner& runner) {
  return std::max<size_t>(1, std::min({max_threads, std::max<size_t>(runner.threads(), 1),
                                       work / std::max<size_t>(work_per_thread, 1)}));
}

std::vector<size_t> ContiguousShares(size_t n, size_t parts,
                                     absl::FunctionRef<uint64_t(size_t)> weight) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) total += weight(i);
  std::vector<size_t> bounds = {0};
  uint64_t done = 0;
  for (size_t part = 1; part < parts; ++part) {
    size_t end = bounds.back();
    while (end < n && done < total * part / parts) done += weight(end++);
    bounds.push_back(end);
  }
  bounds.push_back(n);
  return bounds;
}

}  // namespace demod
