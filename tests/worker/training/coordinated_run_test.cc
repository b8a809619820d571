// The worker's side of a coordinated run against a real coordinator on loopback: the exchange
// accepts only the run's tensor table, and the end of the run reaches the session as a status
// code (OUT_OF_RANGE), never as text.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/layout_table.h"
#include "server/coordinator_server.h"
#include "tests/support/status_matchers.h"
#include "tests/support/synthetic_worker.h"
#include "worker/client/coordinator_client.h"
#include "worker/training/coordinator_exchange.h"
#include "worker/training/demo_session.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

const std::vector<std::pair<std::string, std::vector<int64_t>>> kShapes = {{"w", {16, 32}},
                                                                           {"b", {32}}};
constexpr int64_t kChunk = 16;
constexpr int64_t kTopK = 4;

class CoordinatedRunTest : public ::testing::Test {
 protected:
  void Start(int64_t total_steps, absl::Duration deadline = absl::Seconds(30),
             int64_t balanced_global_batch = 0) {
    CoordinatorServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = "";
    options.config.run_id = "coordinated-run-test";
    options.config.total_steps = total_steps;
    options.config.optimizer.compression_chunk = kChunk;
    options.config.optimizer.compression_topk = kTopK;
    options.config.optimizer.value_encoding = ValueEncoding::kFloat32;
    options.config.deadline.kind = DeadlinePolicy::Kind::kFixed;
    options.config.deadline.fixed = deadline;
    options.config.max_missed_steps = 10;
    options.config.batch.global = balanced_global_batch;
    options.config.batch.balance = balanced_global_batch > 0;
    ASSERT_OK_AND_ASSIGN(server_, CoordinatorServer::Start(std::move(options)));
    target_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  SessionOptions Options(const std::string& name) const {
    SessionOptions options;
    options.client = SyntheticWorkerOptions(target_, name, kShapes);
    options.step_timeout = absl::Seconds(30);
    return options;
  }

  static std::vector<TensorShape> Shapes() {
    std::vector<TensorShape> shapes;
    for (const auto& [name, shape] : kShapes) shapes.push_back({name, shape});
    return shapes;
  }

  // Parameters of kShapes with a gradient, as after backward().
  static std::vector<NamedTensor> Parameters() {
    std::vector<NamedTensor> parameters;
    for (const auto& [name, shape] : kShapes) {
      parameters.emplace_back(name, at::zeros(shape, at::kFloat).set_requires_grad(true));
    }
    return parameters;
  }
  static void Backward(const std::vector<NamedTensor>& parameters) {
    for (const auto& [name, p] : parameters) p.mutable_grad() = at::randn_like(p);
  }

  std::unique_ptr<CoordinatorServer> server_;
  std::string target_;
};

TEST_F(CoordinatedRunTest, RegisterAcceptsOnlyTheRunsTable) {
  Start(/*total_steps=*/10);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<CoordinatorClient> client,
                       CoordinatorClient::Connect(Options("a").client));
  CoordinatorExchange exchange(client.get(), {}, absl::Seconds(10));

  ASSERT_OK_AND_ASSIGN(LayoutTable other_k, MakeLayoutTable(Shapes(), kChunk, 2 * kTopK));
  absl::Status status = exchange.Register(other_k);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("topk 8 differs from the run's"));

  std::vector<TensorShape> renamed = Shapes();
  renamed[1].name = "bias";
  ASSERT_OK_AND_ASSIGN(LayoutTable other_name, MakeLayoutTable(renamed, kChunk, kTopK));
  status = exchange.Register(other_name);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("'bias'"));

  ASSERT_OK_AND_ASSIGN(LayoutTable run, MakeLayoutTable(Shapes(), kChunk, kTopK));
  EXPECT_OK(exchange.Register(run));
}

TEST_F(CoordinatedRunTest, TheEndOfTheRunIsOutOfRange) {
  Start(/*total_steps=*/2);
  const std::vector<NamedTensor> parameters = Parameters();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DemoSession> session,
                       DemoSession::Join(Options("a"), parameters));
  while (!session->finished()) {
    Backward(parameters);
    ASSERT_OK(session->Step());
  }
  EXPECT_EQ(session->next_step(), 3);
  Backward(parameters);
  EXPECT_EQ(session->Step().code(), absl::StatusCode::kOutOfRange);

  // A worker that comes after the last step is refused with the same code.
  absl::StatusOr<std::unique_ptr<DemoSession>> late = DemoSession::Join(Options("b"), Parameters());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kOutOfRange) << late.status();
}

// With batch balancing the session learns the global batch at join and its share when the
// first step opens (a lone worker: all of it); without, both are 0.
TEST_F(CoordinatedRunTest, ABalancedRunTellsTheSessionItsShare) {
  Start(/*total_steps=*/3, absl::Seconds(30), /*balanced_global_batch=*/10);
  const std::vector<NamedTensor> parameters = Parameters();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DemoSession> session,
                       DemoSession::Join(Options("a"), parameters));
  EXPECT_EQ(session->global_batch(), 10);
  ASSERT_OK(session->SkipClosedSteps().status());  // reads what has arrived, the share too
  Backward(parameters);
  ASSERT_OK(session->Step());
  EXPECT_EQ(session->batch_samples(), 10u);
  ASSERT_OK(session->Report(1.0, 100, 0.01, std::numeric_limits<double>::quiet_NaN(), 10));
}

TEST_F(CoordinatedRunTest, AnUnbalancedRunHasNoShares) {
  Start(/*total_steps=*/2);
  const std::vector<NamedTensor> parameters = Parameters();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DemoSession> session,
                       DemoSession::Join(Options("a"), parameters));
  Backward(parameters);
  ASSERT_OK(session->Step());
  EXPECT_EQ(session->global_batch(), 0);
  EXPECT_EQ(session->batch_samples(), 0u);
}

// Worker b falls three steps behind (the deadline closes them without it). SkipClosedSteps
// applies those steps' aggregates without computing payloads the coordinator would refuse,
// and b contributes again to the step that is open, with a's parameters.
TEST_F(CoordinatedRunTest, AWorkerBehindAppliesTheClosedStepsAndContributesAgain) {
  Start(/*total_steps=*/50, /*deadline=*/absl::Milliseconds(300));
  const std::vector<NamedTensor> a_parameters = Parameters();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DemoSession> a,
                       DemoSession::Join(Options("a"), a_parameters));
  std::vector<NamedTensor> b_parameters = Parameters();
  for (auto& [name, p] : b_parameters) p.detach().fill_(7);  // the donor's replace them
  absl::StatusOr<std::unique_ptr<DemoSession>> b;
  std::atomic<bool> b_joined = false;
  std::thread joiner([&] {
    b = DemoSession::Join(Options("b"), b_parameters);
    b_joined = true;
  });
  while (!b_joined) {  // a serves b's parameters from inside its steps
    Backward(a_parameters);
    ASSERT_OK(a->Step());
  }
  joiner.join();
  ASSERT_OK(b);
  const int64_t behind_from = (*b)->next_step();
  while (a->next_step() < behind_from + 3) {
    Backward(a_parameters);
    ASSERT_OK(a->Step());
  }

  // It does not wait: the last aggregate may still be on its way.
  int skipped = 0;
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while ((*b)->next_step() < a->next_step() && absl::Now() < give_up) {
    ASSERT_OK_AND_ASSIGN(const int now_skipped, (*b)->SkipClosedSteps());
    skipped += now_skipped;
    if ((*b)->next_step() < a->next_step()) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(skipped, 3);
  EXPECT_EQ((*b)->next_step(), a->next_step());
  for (size_t i = 0; i < a_parameters.size(); ++i) {
    EXPECT_TRUE(at::equal(a_parameters[i].second, b_parameters[i].second)) << a_parameters[i].first;
  }
  ASSERT_OK_AND_ASSIGN(const int again, (*b)->SkipClosedSteps());
  EXPECT_EQ(again, 0);  // current now

  absl::Status a_step;
  std::thread stepper([&] {
    Backward(a_parameters);
    a_step = a->Step();
  });
  Backward(b_parameters);
  ASSERT_OK((*b)->Step());
  stepper.join();
  ASSERT_OK(a_step);
  EXPECT_EQ((*b)->last_contributors().size(), 2u);
  for (size_t i = 0; i < a_parameters.size(); ++i) {
    EXPECT_TRUE(at::equal(a_parameters[i].second, b_parameters[i].second));
  }
}

}  // namespace
}  // namespace demod
