// End to end through the real exposer: record events, scrape /metrics over a socket, check the
// series and lint the exposition with promtool (installed by scripts/setup.sh).
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/coordinator_metrics.h"
#include "server/metrics_endpoint.h"
#include "tests/support/prometheus_scrape.h"
#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Worker(const std::string& family, const std::string& worker) {
  return absl::StrCat(family, "{worker=\"", worker, "\"}");
}

TEST(MetricsTest, ScrapeHasEveryEventAndPassesPromtool) {
  CoordinatorMetrics metrics("run-42");
  auto endpoint = StartMetricsEndpoint("127.0.0.1:0", metrics.registry());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  ASSERT_GT((*endpoint)->port(), 0);

  metrics.SetRunLimits(/*total_steps=*/500, /*min_workers=*/2);
  metrics.WorkerJoined("alpha", "cuda", "NVIDIA H200");
  metrics.WorkerJoined("beta", "cpu", "AMD EPYC 9654");
  metrics.StateTransfer(1000);
  metrics.SetActiveWorkers(2);
  metrics.SetPaused(false);
  for (int step = 1; step <= 3; ++step) {
    metrics.BytesReceived("alpha", 100);
    metrics.BytesReceived("beta", 50);
    metrics.BytesSent("alpha", 10);
    metrics.BytesSent("beta", 10);
    metrics.StepClosed(/*duration_s=*/0.004 * step, /*barrier_wait_s=*/0.002, /*contributors=*/2,
                       /*expected=*/2, /*dense_equivalent_bytes=*/4000);
    metrics.SetCurrentStep(step);
    metrics.SetLearningRate(0.001 * step);
  }
  metrics.PayloadReceived("alpha", 700);
  metrics.AggregateSent("alpha", 900);
  metrics.AggregateSent("alpha", 100);
  metrics.ContributionLate("beta");
  metrics.ContributionMissed("beta");
  metrics.ContributionMissed("beta");
  metrics.FingerprintMismatch("alpha");
  metrics.Report("alpha", /*loss=*/2.0, /*validation_loss=*/2.5, /*tokens=*/1000,
                 /*compute_seconds=*/0.5);
  metrics.Report("beta", /*loss=*/4.0, /*validation_loss=*/kNaN, /*tokens=*/300,
                 /*compute_seconds=*/0);
  metrics.Report("alpha", /*loss=*/3.0, /*validation_loss=*/kNaN, /*tokens=*/1000,
                 /*compute_seconds=*/1.0);

  auto before = HttpGet((*endpoint)->port(), "/metrics");
  ASSERT_TRUE(before.ok()) << before.status();
  const std::string& text = *before;
  EXPECT_EQ(Sample(text, "demod_run_info{run_id=\"run-42\"}"), 1);
  EXPECT_EQ(Sample(text, "demod_active_workers"), 2);
  EXPECT_EQ(Sample(text, "demod_current_step"), 3);
  EXPECT_EQ(Sample(text, "demod_total_steps"), 500);
  EXPECT_EQ(Sample(text, "demod_min_workers"), 2);
  EXPECT_EQ(Sample(text, "demod_learning_rate"), 0.003);
  EXPECT_EQ(Sample(text, "demod_consecutive_short_steps"), 0);
  EXPECT_EQ(Sample(text,
                   "demod_worker_info{device_kind=\"cuda\",device_name=\"NVIDIA H200\","
                   "worker=\"alpha\"}"),
            1);
  EXPECT_EQ(Sample(text,
                   "demod_worker_info{device_kind=\"cpu\",device_name=\"AMD EPYC 9654\","
                   "worker=\"beta\"}"),
            1);
  EXPECT_EQ(Sample(text, Worker("demod_worker_evictions_total", "beta")), 0);
  EXPECT_EQ(Sample(text, Worker("demod_worker_payload_bytes_total", "alpha")), 700);
  EXPECT_EQ(Sample(text, Worker("demod_worker_payload_bytes_total", "beta")), 0);
  EXPECT_EQ(Sample(text, Worker("demod_worker_aggregate_bytes_total", "alpha")), 1000);
  EXPECT_EQ(Sample(text, "demod_paused"), 0);
  EXPECT_EQ(Sample(text, "demod_joins_total"), 2);
  EXPECT_EQ(Sample(text, "demod_steps_total"), 3);
  EXPECT_EQ(Sample(text, "demod_step_contributors"), 2);
  EXPECT_EQ(Sample(text, "demod_step_expected_contributors"), 2);
  EXPECT_EQ(Sample(text, "demod_dense_equivalent_bytes_total"), 12000);
  EXPECT_EQ(Sample(text, "demod_step_duration_seconds_count"), 3);
  EXPECT_NEAR(*Sample(text, "demod_step_duration_seconds_sum"), 0.024, 1e-9);
  // Buckets double from 1 ms: 4 ms lands in le=0.004, 8 and 12 ms in le=0.016.
  EXPECT_EQ(Sample(text, "demod_step_duration_seconds_bucket{le=\"0.004\"}"), 1);
  EXPECT_EQ(Sample(text, "demod_step_duration_seconds_bucket{le=\"0.016\"}"), 3);
  EXPECT_EQ(Sample(text, "demod_step_duration_seconds_bucket{le=\"+Inf\"}"), 3);
  EXPECT_EQ(Sample(text, "demod_barrier_wait_seconds_count"), 3);
  EXPECT_EQ(Sample(text, "demod_received_bytes_total"), 450);
  EXPECT_EQ(Sample(text, "demod_sent_bytes_total"), 60);
  EXPECT_EQ(Sample(text, Worker("demod_worker_received_bytes_total", "alpha")), 300);
  EXPECT_EQ(Sample(text, Worker("demod_worker_received_bytes_total", "beta")), 150);
  EXPECT_EQ(Sample(text, Worker("demod_worker_sent_bytes_total", "beta")), 30);
  EXPECT_EQ(Sample(text, Worker("demod_late_contributions_total", "alpha")), 0);
  EXPECT_EQ(Sample(text, Worker("demod_late_contributions_total", "beta")), 1);
  EXPECT_EQ(Sample(text, Worker("demod_missed_contributions_total", "beta")), 2);
  EXPECT_EQ(Sample(text, Worker("demod_fingerprint_mismatches_total", "alpha")), 1);
  EXPECT_EQ(Sample(text, Worker("demod_fingerprint_mismatches_total", "beta")), 0);
  EXPECT_EQ(Sample(text, "demod_state_transfers_total"), 1);
  EXPECT_EQ(Sample(text, "demod_state_transfer_bytes_total"), 1000);
  EXPECT_EQ(Sample(text, Worker("demod_training_loss", "alpha")), 3);
  EXPECT_EQ(Sample(text, Worker("demod_training_loss", "beta")), 4);
  EXPECT_EQ(Sample(text, "demod_training_loss_mean"), 3.5);
  // A report without a validation loss keeps the last measured one.
  EXPECT_EQ(Sample(text, Worker("demod_validation_loss", "alpha")), 2.5);
  EXPECT_EQ(Sample(text, Worker("demod_validation_loss", "beta")), std::nullopt);
  EXPECT_EQ(Sample(text, Worker("demod_tokens_total", "alpha")), 2000);
  EXPECT_EQ(Sample(text, Worker("demod_tokens_total", "beta")), 300);
  EXPECT_EQ(Sample(text, Worker("demod_tokens_per_second", "alpha")), 1000);
  EXPECT_EQ(Sample(text, Worker("demod_tokens_per_second", "beta")), std::nullopt);
  for (const char* reason : {"disconnected", "invalid_message", "shutdown", "finished"}) {
    EXPECT_EQ(Sample(text, absl::StrCat("demod_leaves_total{reason=\"", reason, "\"}")), 0);
  }
  for (const char* reason : {"missed_steps", "heartbeat", "no_donor"}) {
    EXPECT_EQ(Sample(text, absl::StrCat("demod_evictions_total{reason=\"", reason, "\"}")), 0);
  }

  metrics.WorkerEvicted("beta", EvictionReason::kMissedSteps);
  metrics.SetActiveWorkers(1);
  metrics.SetPaused(true);
  auto after = HttpGet((*endpoint)->port(), "/metrics");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(Sample(*after, "demod_evictions_total{reason=\"missed_steps\"}"), 1);
  EXPECT_EQ(Sample(*after, Worker("demod_worker_evictions_total", "beta")), 1);
  EXPECT_EQ(Sample(*after, Worker("demod_worker_evictions_total", "alpha")), 0);
  EXPECT_THAT(*after, Not(HasSubstr("device_name=\"AMD EPYC 9654\"")));
  EXPECT_EQ(Sample(*after, "demod_paused"), 1);
  EXPECT_EQ(Sample(*after, Worker("demod_training_loss", "beta")), std::nullopt);
  EXPECT_EQ(Sample(*after, Worker("demod_training_loss", "alpha")), 3);
  EXPECT_EQ(Sample(*after, "demod_training_loss_mean"), 3);
  // Counters outlive the worker's presence.
  EXPECT_EQ(Sample(*after, Worker("demod_worker_received_bytes_total", "beta")), 150);
  EXPECT_EQ(Sample(*after, Worker("demod_tokens_total", "beta")), 300);

  metrics.WorkerLeft("alpha", LeaveReason::kShutdown);
  auto empty = HttpGet((*endpoint)->port(), "/metrics");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(Sample(*empty, "demod_leaves_total{reason=\"shutdown\"}"), 1);
  EXPECT_THAT(*empty, Not(HasSubstr("demod_training_loss{")));
  EXPECT_THAT(*empty, Not(HasSubstr("demod_validation_loss{")));
  EXPECT_THAT(*empty, Not(HasSubstr("demod_tokens_per_second{")));
  EXPECT_THAT(*empty, Not(HasSubstr("demod_worker_info{")));
  // No worker present: no mean rather than a made-up 0.
  EXPECT_EQ(Sample(*empty, "demod_training_loss_mean"), std::nullopt);

  // A worker that reports again after its removal gets its gauges back.
  metrics.Report("beta", 1.0, 1.5, 10, 1.0);
  auto back = HttpGet((*endpoint)->port(), "/metrics");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(Sample(*back, Worker("demod_training_loss", "beta")), 1);
  EXPECT_EQ(Sample(*back, "demod_training_loss_mean"), 1);

  const std::optional<std::string> promtool = FindProgram("promtool");
  ASSERT_TRUE(promtool.has_value())
      << "promtool not found (Debian package 'prometheus'): run scripts/setup.sh, which "
         "installs it";
  for (const std::string* exposition : {&*before, &*after, &*empty, &*back}) {
    CommandResult lint = PromtoolCheckMetrics(*promtool, *exposition);
    EXPECT_EQ(lint.exit_code, 0) << lint.output << "\n--- exposition ---\n" << *exposition;
    EXPECT_EQ(lint.output, "") << "promtool lint findings";
  }
}

// demod_consecutive_short_steps counts the run of short steps up to the last one, and a
// rejoin under the same name with other hardware replaces the worker's info series.
TEST(MetricsTest, ShortStepRunsAndRejoinedHardware) {
  CoordinatorMetrics metrics("run");
  auto endpoint = StartMetricsEndpoint("127.0.0.1:0", metrics.registry());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const auto scrape = [&] { return ValueOrStop(HttpGet((*endpoint)->port(), "/metrics")); };
  const auto close = [&](int contributors) {
    metrics.StepClosed(0.01, 0.005, contributors, /*expected=*/3, 100);
  };
  close(3);
  EXPECT_EQ(Sample(scrape(), "demod_consecutive_short_steps"), 0);
  close(2);
  close(1);
  EXPECT_EQ(Sample(scrape(), "demod_consecutive_short_steps"), 2);
  close(3);
  EXPECT_EQ(Sample(scrape(), "demod_consecutive_short_steps"), 0);
  close(2);
  EXPECT_EQ(Sample(scrape(), "demod_consecutive_short_steps"), 1);

  metrics.WorkerJoined("w", "cpu", "Intel Xeon");
  metrics.WorkerJoined("w", "cuda", "NVIDIA L4");
  const std::string text = scrape();
  EXPECT_EQ(Sample(text,
                   "demod_worker_info{device_kind=\"cuda\",device_name=\"NVIDIA L4\","
                   "worker=\"w\"}"),
            1);
  EXPECT_THAT(text, Not(HasSubstr("Intel Xeon")));
}

TEST(MetricsTest, AddressInUseIsAnErrorNotAnException) {
  CoordinatorMetrics metrics("run");
  auto first = StartMetricsEndpoint("127.0.0.1:0", metrics.registry());
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  auto second = StartMetricsEndpoint(taken, metrics.registry());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(taken));
  // The first endpoint is unharmed.
  EXPECT_OK(HttpGet((*first)->port(), "/metrics"));
}

TEST(MetricsTest, MalformedAddressIsInvalidArgument) {
  CoordinatorMetrics metrics("run");
  for (const char* address :
       {"9464", "localhost", ":9464", "127.0.0.1:http", "127.0.0.1:70000", "[::1:9464"}) {
    auto endpoint = StartMetricsEndpoint(address, metrics.registry());
    ASSERT_FALSE(endpoint.ok()) << address;
    EXPECT_EQ(endpoint.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(endpoint.status().message(), HasSubstr(address));
  }
  EXPECT_EQ(StartMetricsEndpoint("127.0.0.1:0", nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsTest, ConcurrentUpdatesAddUp) {
  CoordinatorMetrics metrics("run");
  auto endpoint = StartMetricsEndpoint("127.0.0.1:0", metrics.registry());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  constexpr int kThreads = 4;
  constexpr int kIterations = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      const std::string worker = absl::StrCat("w", t % 2);
      for (int i = 0; i < kIterations; ++i) {
        metrics.BytesReceived(worker, 1);
        metrics.Report(worker, 1.0 + t % 2, kNaN, 1, 0.1);
        if (i % 100 == 0) metrics.RemoveWorker(worker);
      }
    });
  }
  // Scrape while they write: collection must not race the updates.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(HttpGet((*endpoint)->port(), "/metrics").ok());
  for (std::thread& t : threads) t.join();
  auto text = HttpGet((*endpoint)->port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(Sample(*text, "demod_received_bytes_total"), kThreads * kIterations);
  EXPECT_EQ(Sample(*text, Worker("demod_worker_received_bytes_total", "w0")),
            kThreads / 2 * kIterations);
  EXPECT_EQ(Sample(*text, Worker("demod_tokens_total", "w1")), kThreads / 2 * kIterations);
  EXPECT_EQ(Sample(*text, "demod_training_loss_mean"), 1.5);
}

}  // namespace
}  // namespace demod
