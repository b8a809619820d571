#include "common/run_in_parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace demod {
namespace {

TEST(RunInParallelTest, RunsEveryTaskOnceTheFirstOnTheCaller) {
  for (size_t n : {0u, 1u, 2u, 7u}) {
    std::vector<std::atomic<int>> runs(n);
    std::thread::id first;
    RunInParallel(n, [&](size_t i) {
      runs[i].fetch_add(1);
      if (i == 0) first = std::this_thread::get_id();
    });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(runs[i].load(), 1) << "n " << n << ", task " << i;
    if (n > 0) {
      EXPECT_EQ(first, std::this_thread::get_id());
    }
  }
}

// More tasks than the pool has helpers, from several callers at once, some calls nested in
// others' tasks: every task runs exactly once and each call returns only once its own are done.
TEST(RunInParallelTest, OverlappingAndNestedCallsRunEachTaskOnce) {
  constexpr size_t kCallers = 4;
  constexpr size_t kTasks = 40;
  constexpr int kRounds = 50;
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (size_t c = 0; c < kCallers; ++c) {
    callers.emplace_back([&wrong] {
      for (int round = 0; round < kRounds; ++round) {
        std::vector<std::atomic<int>> runs(kTasks);
        RunInParallel(kTasks, [&runs](size_t i) {
          if (i % 10 == 3) {
            std::vector<std::atomic<int>> inner(3);
            RunInParallel(3, [&inner](size_t j) { inner[j].fetch_add(1); });
            for (auto& r : inner) runs[i].fetch_add(r.load() == 1 ? 0 : 100);
          }
          runs[i].fetch_add(1);
        });
        for (auto& r : runs) wrong.fetch_add(r.load() == 1 ? 0 : 1);
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(RunInParallelTest, ThreadsForStaysWithinItsBounds) {
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  EXPECT_EQ(ThreadsFor(0, 4, 4), 1u);
  EXPECT_EQ(ThreadsFor(7, 4, 4), 1u);
  EXPECT_EQ(ThreadsFor(8, 4, 4), std::min<size_t>(2, cores));
  EXPECT_EQ(ThreadsFor(1000, 4, 4), std::min<size_t>(4, cores));
  EXPECT_EQ(ThreadsFor(1000, 4, 0), 1u);
  EXPECT_EQ(ThreadsFor(1000, 0, 3), std::min<size_t>(3, cores));
}

class FixedThreads : public TaskRunner {
 public:
  explicit FixedThreads(size_t threads) : threads_(threads) {}
  size_t threads() const override { return threads_; }
  void Run(size_t n, absl::FunctionRef<void(size_t)> task) const override {
    for (size_t i = 0; i < n; ++i) task(i);
  }

 private:
  size_t threads_;
};

TEST(RunInParallelTest, ThreadsForARunnerStaysWithinItsThreads) {
  EXPECT_EQ(ThreadsFor(1000, 4, 16, FixedThreads(3)), 3u);
  EXPECT_EQ(ThreadsFor(1000, 4, 2, FixedThreads(3)), 2u);
  EXPECT_EQ(ThreadsFor(11, 4, 16, FixedThreads(8)), 2u);
  EXPECT_EQ(ThreadsFor(1000, 4, 16, FixedThreads(0)), 1u);
  EXPECT_EQ(HelperThreads().threads(), std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::atomic<int>> runs(5);
  HelperThreads().Run(runs.size(), [&runs](size_t i) { ++runs[i]; });
  for (const std::atomic<int>& r : runs) EXPECT_EQ(r.load(), 1);
}

}  // namespace
}  // namespace demod
