#include "server/batch_balancer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

int64_t Sum(const std::map<WorkerId, int64_t>& shares) {
  int64_t total = 0;
  for (const auto& [id, s] : shares) total += s;
  return total;
}

// The worker computed at `samples_per_second`, at a share of `samples` (proportional cost).
void Measure(BatchBalancer& b, WorkerId worker, double samples_per_second, int64_t samples = 10) {
  b.Observe(worker, samples, static_cast<double>(samples) / samples_per_second);
}

BatchBalancer Balancer(int64_t global_batch) {
  BalancerOptions options;
  options.global_batch = global_batch;
  return BatchBalancer(options);
}

TEST(BatchBalancerTest, ValidatesItsOptions) {
  BalancerOptions ok;
  ok.global_batch = 8;
  EXPECT_TRUE(BatchBalancer::Validate(ok).ok());
  for (auto bad : {BalancerOptions{0, 0.3, 0.05}, BalancerOptions{8, 0, 0.05},
                   BalancerOptions{8, 1.5, 0.05}, BalancerOptions{8, 0.3, -1}}) {
    EXPECT_EQ(BatchBalancer::Validate(bad).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(BatchBalancerTest, WithoutMeasurementsTheBatchIsSplitEvenly) {
  BatchBalancer b = Balancer(10);
  // 10 / 3: the remainder goes to the lower ids.
  EXPECT_THAT(b.Shares({3, 1, 2}), ElementsAre(Pair(1u, 4), Pair(2u, 3), Pair(3u, 3)));
  EXPECT_TRUE(b.Shares({}).empty());
}

TEST(BatchBalancerTest, SharesFollowThroughputAndSumToTheGlobalBatch) {
  BatchBalancer b = Balancer(48);
  Measure(b, 1, 300);  // three times as fast as 3
  Measure(b, 2, 200);
  Measure(b, 3, 100);
  const std::map<WorkerId, int64_t> shares = b.Shares({1, 2, 3});
  EXPECT_THAT(shares, ElementsAre(Pair(1u, 24), Pair(2u, 16), Pair(3u, 8)));
  EXPECT_EQ(Sum(shares), 48);
}

TEST(BatchBalancerTest, SharesRespectEachWorkersLimits) {
  BatchBalancer b = Balancer(40);
  Measure(b, 1, 1000);  // fast, but its memory holds 12
  Measure(b, 2, 100);
  Measure(b, 3, 100);
  b.SetLimits(1, 1, 12);
  b.SetLimits(3, 16, 40);  // at least 16
  std::map<WorkerId, int64_t> shares = b.Shares({1, 2, 3});
  EXPECT_THAT(shares, ElementsAre(Pair(1u, 12), Pair(2u, 12), Pair(3u, 16)));
  EXPECT_EQ(Sum(shares), 40);
  // A minimum that the equal split of the rest meets anyway changes nothing: 1 is held at 12
  // (which pushed 3 above its minimum), and 2 and 3 share the other 28 equally.
  b.SetLimits(3, 10, 40);
  shares = b.Shares({1, 2, 3});
  EXPECT_THAT(shares, ElementsAre(Pair(1u, 12), Pair(2u, 14), Pair(3u, 14)));
}

TEST(BatchBalancerTest, LimitsThatCannotMeetTheGlobalBatchWin) {
  BatchBalancer short_of = Balancer(100);
  short_of.SetLimits(1, 1, 20);
  short_of.SetLimits(2, 1, 30);
  EXPECT_THAT(short_of.Shares({1, 2}), ElementsAre(Pair(1u, 20), Pair(2u, 30)));
  BatchBalancer over = Balancer(10);
  over.SetLimits(1, 8, 10);
  over.SetLimits(2, 8, 10);
  EXPECT_THAT(over.Shares({1, 2}), ElementsAre(Pair(1u, 8), Pair(2u, 8)));
}

TEST(BatchBalancerTest, ANewWorkerCountsAsTheMedianUntilMeasured) {
  BatchBalancer b = Balancer(60);
  Measure(b, 1, 100);
  Measure(b, 2, 300);
  Measure(b, 3, 200);
  // 4 is unmeasured: taken as 200, like 3. 60 * (1, 3, 2, 2) / 8 = 7.5, 22.5, 15, 15: the
  // spare sample goes to the lower id of the two halves.
  EXPECT_THAT(b.Shares({1, 2, 3, 4}),
              ElementsAre(Pair(1u, 8), Pair(2u, 22), Pair(3u, 15), Pair(4u, 15)));
}

// A worker that halves its speed gets a smaller share within a few measurements.
TEST(BatchBalancerTest, ReactsToAWorkerSlowingDownWithinAFewSteps) {
  BatchBalancer b = Balancer(30);
  for (int step = 0; step < 10; ++step) {
    for (WorkerId w : {1u, 2u, 3u}) Measure(b, w, 100);
    EXPECT_THAT(b.Shares({1, 2, 3}), ElementsAre(Pair(1u, 10), Pair(2u, 10), Pair(3u, 10)));
  }
  int reacted_after = 0;
  for (int step = 1; step <= 20; ++step) {
    Measure(b, 1, 100);
    Measure(b, 2, 100);
    Measure(b, 3, 50);
    const std::map<WorkerId, int64_t> shares = b.Shares({1, 2, 3});
    EXPECT_EQ(Sum(shares), 30);
    if (reacted_after == 0 && shares.at(3) < 10) reacted_after = step;
  }
  EXPECT_GE(reacted_after, 1);
  EXPECT_LE(reacted_after, 3);
  // Settled at the new speeds: 12, 12, 6.
  EXPECT_THAT(b.Shares({1, 2, 3}), ElementsAre(Pair(1u, 12), Pair(2u, 12), Pair(3u, 6)));
}

// Timings that wobble by up to 10% around fixed speeds barely move the shares once settled
// (at most a change or two in 500 steps, never back and forth), and the step stays close to
// the best split's.
TEST(BatchBalancerTest, NoisyTimingsDoNotMakeTheSharesOscillate) {
  const std::vector<std::vector<double>> fleets = {{400, 200, 200}, {300, 200, 100, 50}};
  for (const std::vector<double>& speeds : fleets) {
    for (uint32_t seed = 0; seed < 5; ++seed) {
      BatchBalancer b = Balancer(256);
      std::mt19937 rng(seed);
      std::uniform_real_distribution<double> noise(0.9, 1.1);
      std::vector<WorkerId> ids;
      for (size_t i = 0; i < speeds.size(); ++i) ids.push_back(static_cast<WorkerId>(i + 1));
      std::map<WorkerId, int64_t> settled = b.Shares(ids);
      int changes = 0;
      for (int step = 0; step < 500; ++step) {
        // Each measured at the share it computed.
        for (size_t i = 0; i < speeds.size(); ++i) {
          Measure(b, ids[i], speeds[i] * noise(rng), settled.at(ids[i]));
        }
        const std::map<WorkerId, int64_t> shares = b.Shares(ids);
        EXPECT_EQ(Sum(shares), 256);
        if (step >= 10 && shares != settled) ++changes;
        settled = shares;
      }
      EXPECT_LE(changes, 2) << "seed " << seed;
      // The step's compute time against the best split's: 256 / sum of speeds.
      double total_speed = 0;
      double makespan = 0;
      for (size_t i = 0; i < speeds.size(); ++i) {
        total_speed += speeds[i];
        makespan = std::max(makespan, settled.at(ids[i]) / speeds[i]);
      }
      EXPECT_LE(makespan, 1.2 * 256 / total_speed) << "seed " << seed;
    }
  }
}

// Workers whose step costs a fixed time plus a time per sample, as real ones do.
struct SimulatedWorker {
  WorkerId id;
  double overhead;    // seconds per step
  double per_sample;  // seconds
  double Seconds(int64_t samples) const { return overhead + samples * per_sample; }
};

// Runs `steps` steps: every worker computes its share and is measured; returns the shares.
std::map<WorkerId, int64_t> RunSteps(BatchBalancer& b, const std::vector<SimulatedWorker>& fleet,
                                     std::map<WorkerId, int64_t> shares, int steps) {
  std::vector<WorkerId> ids;
  for (const SimulatedWorker& w : fleet) ids.push_back(w.id);
  for (int step = 0; step < steps; ++step) {
    for (const SimulatedWorker& w : fleet)
      b.Observe(w.id, shares.at(w.id), w.Seconds(shares.at(w.id)));
    shares = b.Shares(ids);
  }
  return shares;
}

double Makespan(const std::vector<SimulatedWorker>& fleet,
                const std::map<WorkerId, int64_t>& shares) {
  double makespan = 0;
  for (const SimulatedWorker& w : fleet) makespan = std::max(makespan, w.Seconds(shares.at(w.id)));
  return makespan;
}

// The best whole-sample split's compute time, by trying every split (two workers).
double BestMakespan(const std::vector<SimulatedWorker>& fleet, int64_t global_batch) {
  double best = HUGE_VAL;
  for (int64_t first = 1; first < global_batch; ++first) {
    best = std::min(best,
                    Makespan(fleet, {{fleet[0].id, first}, {fleet[1].id, global_batch - first}}));
  }
  return best;
}

// A fixed cost per step makes a smaller share slower per sample. Shares proportional to the
// measured samples per second would still settle, but up to the hysteresis away from equal
// times; the fitted overhead takes them there.
TEST(BatchBalancerTest, AFixedCostPerStepIsLearnedAndTheComputeTimesMeet) {
  const std::vector<SimulatedWorker> fleet = {{1, 0.005, 1.0 / 800}, {2, 0.015, 3.0 / 800}};
  BatchBalancer b = Balancer(32);
  const std::map<WorkerId, int64_t> shares = RunSteps(b, fleet, b.Shares({1, 2}), 10);
  EXPECT_THAT(shares, ElementsAre(Pair(1u, 26), Pair(2u, 6)));
  EXPECT_DOUBLE_EQ(Makespan(fleet, shares), BestMakespan(fleet, 32));
  for (const SimulatedWorker& w : fleet) {
    ASSERT_TRUE(b.cost(w.id).has_value());
    EXPECT_NEAR(b.cost(w.id)->overhead, w.overhead, 1e-9);
    EXPECT_NEAR(b.cost(w.id)->per_sample, w.per_sample, 1e-9);
  }
  EXPECT_NEAR(*b.throughput(2), 6 / fleet[1].Seconds(6), 1e-9);
}

// Worker 2's overhead alone outlasts worker 1's whole batch: 2 is held at its minimum of 1 while
// 1 would take more than the 24 it may; the shares still sum to the global batch.
TEST(BatchBalancerTest, OneWorkerAtItsMinimumAndOneAtItsMaximumStillSumToTheBatch) {
  const std::vector<SimulatedWorker> fleet = {{1, 0.001, 1.0 / 1000}, {2, 0.2, 1.0 / 10}};
  BatchBalancer b = Balancer(24);
  b.SetLimits(1, 1, 24);
  for (const SimulatedWorker& w : fleet) {
    for (int64_t samples : {4, 8}) b.Observe(w.id, samples, w.Seconds(samples));
  }
  EXPECT_THAT(b.Shares({1, 2}), ElementsAre(Pair(1u, 23), Pair(2u, 1)));
}

// A worker that slows down (throttled, or sharing its GPU) is refitted from its new times, and
// the shares follow within a few steps.
TEST(BatchBalancerTest, AWorkerThatChangesSpeedIsRefitted) {
  std::vector<SimulatedWorker> fleet = {{1, 0.002, 1.0 / 800}, {2, 0.006, 3.0 / 800}};
  BatchBalancer b = Balancer(32);
  std::map<WorkerId, int64_t> shares = RunSteps(b, fleet, b.Shares({1, 2}), 10);
  EXPECT_LE(Makespan(fleet, shares), 1.1 * BestMakespan(fleet, 32));
  fleet[1] = {2, 0.012, 6.0 / 800};  // half as fast
  shares = RunSteps(b, fleet, shares, 1);
  EXPECT_LT(shares.at(2), 7);  // smaller after one step
  shares = RunSteps(b, fleet, shares, 10);
  EXPECT_LE(Makespan(fleet, shares), 1.1 * BestMakespan(fleet, 32));
  EXPECT_NEAR(b.cost(2)->per_sample, 6.0 / 800, 1e-9);
}

TEST(BatchBalancerTest, AJoinOrALeaveRebalancesAtOnce) {
  BatchBalancer b = Balancer(30);
  for (WorkerId w : {1u, 2u}) Measure(b, w, 100);
  EXPECT_THAT(b.Shares({1, 2}), ElementsAre(Pair(1u, 15), Pair(2u, 15)));
  EXPECT_THAT(b.Shares({1, 2, 3}), ElementsAre(Pair(1u, 10), Pair(2u, 10), Pair(3u, 10)));
  b.Remove(1);
  EXPECT_THAT(b.Shares({2, 3}), ElementsAre(Pair(2u, 15), Pair(3u, 15)));
  EXPECT_FALSE(b.throughput(1).has_value());
  EXPECT_DOUBLE_EQ(*b.throughput(2), 100);
}

TEST(BatchBalancerTest, IgnoresMeasurementsThatAreNotPositiveAndFinite) {
  BatchBalancer b = Balancer(20);
  Measure(b, 1, 100);
  for (double bad : {0.0, -5.0, std::nan(""), HUGE_VAL}) Measure(b, 1, bad);
  b.Observe(1, 0, 1.0);  // no samples
  b.Observe(1, -3, 1.0);
  EXPECT_DOUBLE_EQ(*b.throughput(1), 100);
}

}  // namespace
}  // namespace demod
