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
  b.Observe(1, 300);  // three times as fast as 3
  b.Observe(2, 200);
  b.Observe(3, 100);
  const std::map<WorkerId, int64_t> shares = b.Shares({1, 2, 3});
  EXPECT_THAT(shares, ElementsAre(Pair(1u, 24), Pair(2u, 16), Pair(3u, 8)));
  EXPECT_EQ(Sum(shares), 48);
}

TEST(BatchBalancerTest, SharesRespectEachWorkersLimits) {
  BatchBalancer b = Balancer(40);
  b.Observe(1, 1000);  // fast, but its memory holds 12
  b.Observe(2, 100);
  b.Observe(3, 100);
  b.SetLimits(1, 1, 12);
  b.SetLimits(3, 10, 40);  // at least 10
  const std::map<WorkerId, int64_t> shares = b.Shares({1, 2, 3});
  EXPECT_THAT(shares, ElementsAre(Pair(1u, 12), Pair(2u, 18), Pair(3u, 10)));
  EXPECT_EQ(Sum(shares), 40);
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
  b.Observe(1, 100);
  b.Observe(2, 300);
  b.Observe(3, 200);
  // 4 is unmeasured: taken as 200, like 3. 60 * (1, 3, 2, 2) / 8 = 7.5, 22.5, 15, 15: the
  // spare sample goes to the lower id of the two halves.
  EXPECT_THAT(b.Shares({1, 2, 3, 4}),
              ElementsAre(Pair(1u, 8), Pair(2u, 22), Pair(3u, 15), Pair(4u, 15)));
}

// A worker that halves its speed gets a smaller share within a few measurements.
TEST(BatchBalancerTest, ReactsToAWorkerSlowingDownWithinAFewSteps) {
  BatchBalancer b = Balancer(30);
  for (int step = 0; step < 10; ++step) {
    for (WorkerId w : {1u, 2u, 3u}) b.Observe(w, 100);
    EXPECT_THAT(b.Shares({1, 2, 3}), ElementsAre(Pair(1u, 10), Pair(2u, 10), Pair(3u, 10)));
  }
  int reacted_after = 0;
  for (int step = 1; step <= 20; ++step) {
    b.Observe(1, 100);
    b.Observe(2, 100);
    b.Observe(3, 50);
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
      std::map<WorkerId, int64_t> settled;
      int changes = 0;
      for (int step = 0; step < 500; ++step) {
        for (size_t i = 0; i < speeds.size(); ++i) b.Observe(ids[i], speeds[i] * noise(rng));
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

TEST(BatchBalancerTest, AJoinOrALeaveRebalancesAtOnce) {
  BatchBalancer b = Balancer(30);
  for (WorkerId w : {1u, 2u}) b.Observe(w, 100);
  EXPECT_THAT(b.Shares({1, 2}), ElementsAre(Pair(1u, 15), Pair(2u, 15)));
  EXPECT_THAT(b.Shares({1, 2, 3}), ElementsAre(Pair(1u, 10), Pair(2u, 10), Pair(3u, 10)));
  b.Remove(1);
  EXPECT_THAT(b.Shares({2, 3}), ElementsAre(Pair(2u, 15), Pair(3u, 15)));
  EXPECT_FALSE(b.throughput(1).has_value());
  EXPECT_EQ(b.throughput(2), 100);
}

TEST(BatchBalancerTest, IgnoresMeasurementsThatAreNotPositiveAndFinite) {
  BatchBalancer b = Balancer(20);
  b.Observe(1, 100);
  for (double bad : {0.0, -5.0, std::nan(""), HUGE_VAL}) b.Observe(1, bad);
  EXPECT_EQ(b.throughput(1), 100);
}

}  // namespace
}  // namespace demod
