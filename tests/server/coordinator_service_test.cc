// The coordinator over real gRPC on loopback: synthetic workers (CoordinatorClient, or raw
// stubs where a test must break the protocol) against an in-process CoordinatorServer.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/aggregation.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "server/coordinator_server.h"
#include "server/parameter_relay.h"
#include "server/run_store.h"
#include "tests/support/prometheus_scrape.h"
#include "tests/support/raw_train_call.h"
#include "tests/support/scoped_temp_dir.h"
#include "tests/support/status_matchers.h"
#include "tests/support/synthetic_payload.h"
#include "tests/support/synthetic_worker.h"
#include "worker/client/coordinator_client.h"
#include "worker/client/state_donor.h"

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Kind = ClientEvent::Kind;

const std::vector<std::pair<std::string, std::vector<int64_t>>> kShapes = {
    {"w1", {256, 512}}, {"b1", {128}}, {"w2", {32, 64}}};
constexpr absl::Duration kWait = absl::Seconds(10);

RunConfig TestConfig(int min_workers = 1) {
  RunConfig c;
  c.run_id = "loopback";
  c.min_workers = min_workers;
  c.max_workers = 8;
  c.total_steps = 100;
  c.optimizer.compression_chunk = 64;
  c.optimizer.compression_topk = 64;  // payloads of ~13 kB: several frames each
  c.optimizer.value_encoding = ValueEncoding::kFloat32;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = absl::Seconds(30);
  c.heartbeat_timeout = absl::Seconds(30);
  c.max_frame_bytes = 4096;  // several frames per payload, so reassembly is exercised
  return c;
}

LayoutTable Layouts(const RunConfig& c) {
  std::vector<TensorShape> shapes;
  for (const auto& [name, shape] : kShapes) shapes.push_back({name, shape});
  return *MakeLayoutTable(shapes, c.optimizer.compression_chunk, c.optimizer.compression_topk);
}

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  void Start(RunConfig config, std::string token = "", std::optional<TlsFiles> tls = {},
             std::string state_dir = "", std::string metrics_address = "") {
    config_ = config;
    layouts_ = Layouts(config);
    CoordinatorServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = std::move(metrics_address);
    options.config = config;
    options.token = std::move(token);
    options.tls = std::move(tls);
    options.state_dir = std::move(state_dir);
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
        CoordinatorServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    target_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  ClientOptions Options(const std::string& name) {
    return SyntheticWorkerOptions(target_, name, kShapes);
  }

  // `resume_step`: the last step the worker's parameters include, as a worker resuming sends.
  std::unique_ptr<CoordinatorClient> Join(const std::string& name, int64_t resume_step = 0) {
    ClientOptions options = Options(name);
    options.join.set_resume_step(resume_step);
    absl::StatusOr<std::unique_ptr<CoordinatorClient>> client = CoordinatorClient::Connect(options);
    EXPECT_OK(client);
    return client.ok() ? *std::move(client) : nullptr;
  }

  // Worker "a", the seed, trains steps 1 .. `steps` alone.
  std::unique_ptr<CoordinatorClient> SeedAndRunSteps(int64_t steps) {
    std::unique_ptr<CoordinatorClient> a = Join("a");
    if (a == nullptr) return nullptr;
    Expect(*a, Kind::kActive);
    for (int64_t step = 1; step <= steps; ++step) {
      EXPECT_OK(a->SendPayload(step, Payload(step)));
      Expect(*a, Kind::kAggregate);
    }
    return a;
  }

  // The next event that is not a pause notice.
  static ClientEvent Next(CoordinatorClient& client) {
    while (true) {
      absl::StatusOr<ClientEvent> event = client.Next(kWait);
      EXPECT_OK(event);
      if (!event.ok()) {
        ClientEvent none;
        none.kind = Kind::kEnded;
        none.status = event.status();
        return none;
      }
      if (event->kind != Kind::kPaused) return *std::move(event);
    }
  }

  static ClientEvent Expect(CoordinatorClient& client, Kind kind) {
    ClientEvent event = Next(client);
    EXPECT_EQ(ClientEventKindName(event.kind), std::string(ClientEventKindName(kind)))
        << event.reason << " " << event.status;
    return event;
  }

  std::string Payload(int64_t step, StepPayload* decoded = nullptr) {
    StepPayload payload = SyntheticPayload(layouts_, step, ValueEncoding::kFloat32, random_);
    if (decoded != nullptr) *decoded = payload;
    return *EncodeStepPayload(payload, layouts_);
  }

  // A joiner is welcomed; the donor is asked for the parameters (after `step`) and sends
  // them; the joiner receives them.
  void TransferThroughDonor(CoordinatorClient& donor, CoordinatorClient& joiner, int64_t step) {
    EXPECT_TRUE(joiner.welcome().receives_state());
    ClientEvent request = Expect(donor, Kind::kSendState);
    EXPECT_EQ(request.joiner, joiner.worker_id());
    ASSERT_TRUE(donor.SendState(request, step, std::string(10000, 'p')).ok());
    ClientEvent state = Expect(joiner, Kind::kState);
    EXPECT_EQ(state.bytes, std::string(10000, 'p'));
    EXPECT_EQ(state.step, step);
  }

  // The same, when no step is in progress: the joiner is active from the next step at once.
  void AdmitThroughDonor(CoordinatorClient& donor, CoordinatorClient& joiner, int64_t first_step) {
    TransferThroughDonor(donor, joiner, first_step - 1);
    EXPECT_EQ(Expect(joiner, Kind::kActive).step, first_step);
  }

  v1::RunStatus Status(const std::string& token = "") {
    auto stub =
        v1::Coordinator::NewStub(grpc::CreateChannel(target_, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::RunStatus status;
    last_rpc_ = stub->GetStatus(&context, v1::GetStatusRequest(), &status);
    return status;
  }

  RunConfig config_;
  LayoutTable layouts_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string target_;
  std::mt19937_64 random_{7};
  grpc::Status last_rpc_;
};

TEST_F(CoordinatorServiceTest, WorkersGetIdenticalCorrectAggregatesStepAfterStep) {
  Start(TestConfig(/*min_workers=*/2));
  auto a = Join("a");
  ASSERT_NE(a, nullptr);
  EXPECT_FALSE(a->welcome().receives_state());  // the seed: its parameters are the run's
  EXPECT_EQ(a->welcome().run().run_id(), "loopback");
  EXPECT_EQ(a->welcome().run().optimizer().compression_topk(), 64);
  EXPECT_EQ(Expect(*a, Kind::kActive).step, 1);
  auto b = Join("b");
  ASSERT_NE(b, nullptr);
  AdmitThroughDonor(*a, *b, 1);

  uint64_t payload_bytes = 0;
  for (int64_t step = 1; step <= 3; ++step) {
    StepPayload pa, pb;
    const std::string encoded = Payload(step, &pa);
    payload_bytes += encoded.size();
    ASSERT_GT(encoded.size(), 2u * config_.max_frame_bytes);
    ASSERT_TRUE(a->SendPayload(step, encoded).ok());
    ASSERT_TRUE(b->SendPayload(step, Payload(step, &pb)).ok());
    ClientEvent ga = Expect(*a, Kind::kAggregate);
    ClientEvent gb = Expect(*b, Kind::kAggregate);
    EXPECT_EQ(ga.step, step);
    EXPECT_EQ(ga.bytes, gb.bytes);  // byte-identical for every worker
    absl::StatusOr<StepAggregate> got = DecodeStepAggregate(ga.bytes, layouts_);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_THAT(got->contributors, ElementsAre(a->worker_id(), b->worker_id()));
    // The same payloads, aggregated here, give the same bytes.
    StepAggregate want = *AggregateStep({{a->worker_id(), &pa}, {b->worker_id(), &pb}}, layouts_);
    EXPECT_EQ(*EncodeStepAggregate(want, layouts_), ga.bytes);
  }
  v1::RunStatus status = Status();
  ASSERT_TRUE(last_rpc_.ok()) << last_rpc_.error_message();
  EXPECT_EQ(status.completed_steps(), 3);
  EXPECT_EQ(status.open_step(), 4);
  ASSERT_EQ(status.members_size(), 2);
  EXPECT_EQ(status.members(0).name(), "a");
  EXPECT_EQ(status.members(0).hardware().device_name(), "test cpu");
  EXPECT_GT(status.members(0).bytes_received(), payload_bytes + 10000);  // and the parameters
  // Both got the same aggregates; b also got the relayed parameters.
  EXPECT_GT(status.members(0).bytes_sent(), payload_bytes);
  EXPECT_GT(status.members(1).bytes_sent(), status.members(0).bytes_sent() + 9000);
}

TEST_F(CoordinatorServiceTest, DeadlineClosesTheStepAndALatePayloadIsReportedNotIncluded) {
  RunConfig config = TestConfig(/*min_workers=*/2);
  config.deadline.fixed = absl::Milliseconds(400);
  config.max_missed_steps = 10;
  Start(config, "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  ASSERT_NE(a, nullptr);
  Expect(*a, Kind::kActive);
  auto b = Join("b");
  ASSERT_NE(b, nullptr);
  AdmitThroughDonor(*a, *b, 1);

  ASSERT_TRUE(a->SendPayload(1, Payload(1)).ok());
  ClientEvent ga = Expect(*a, Kind::kAggregate);  // closed at the deadline, without b
  ClientEvent gb = Expect(*b, Kind::kAggregate);
  EXPECT_EQ(ga.bytes, gb.bytes);
  EXPECT_THAT(DecodeStepAggregate(ga.bytes, layouts_)->contributors, ElementsAre(a->worker_id()));
  // a waited for b until the deadline: that wait is the step's barrier wait.
  absl::StatusOr<std::string> scrape = HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  EXPECT_EQ(Sample(*scrape, "demod_barrier_wait_seconds_count"), 1);
  EXPECT_GT(Sample(*scrape, "demod_barrier_wait_seconds_sum").value_or(0), 0.3);

  ASSERT_TRUE(b->SendPayload(1, Payload(1)).ok());
  ClientEvent late = Expect(*b, Kind::kNotIncluded);
  EXPECT_THAT(late.steps, ElementsAre(1));
  // b goes on with the next step as usual.
  ASSERT_TRUE(a->SendPayload(2, Payload(2)).ok());
  ASSERT_TRUE(b->SendPayload(2, Payload(2)).ok());
  EXPECT_THAT(DecodeStepAggregate(Expect(*b, Kind::kAggregate).bytes, layouts_)->contributors,
              ElementsAre(a->worker_id(), b->worker_id()));
  EXPECT_EQ(Status().members(1).contributions_missed(), 1u);
}

TEST_F(CoordinatorServiceTest, SilentContributorIsEvictedAndCanRejoin) {
  RunConfig config = TestConfig(/*min_workers=*/2);
  config.deadline.fixed = absl::Milliseconds(300);
  config.max_missed_steps = 2;
  // b's client heartbeats (every 333 ms) but sends no payload: evicted once it has missed 2
  // steps and sent no payload for 1 s.
  config.heartbeat_timeout = absl::Seconds(1);
  Start(config);
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  auto b = Join("b");
  AdmitThroughDonor(*a, *b, 1);
  int64_t step = 1;
  for (; step <= 20 && Status().members_size() == 2; ++step) {
    ASSERT_TRUE(a->SendPayload(step, Payload(step)).ok());
    Expect(*a, Kind::kAggregate);
  }
  EXPECT_GE(step - 1, 3);  // 2 missed steps of 300 ms were not enough
  ClientEvent evicted = Next(*b);
  while (evicted.kind == Kind::kAggregate) evicted = Next(*b);
  ASSERT_EQ(evicted.kind, Kind::kEvicted);
  EXPECT_THAT(evicted.reason, HasSubstr("steps in a row, no payload for"));
  ClientEvent ended = Expect(*b, Kind::kEnded);
  EXPECT_EQ(ended.status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Status().members_size(), 1);

  // Below min_workers the run pauses; the same worker comes back, is admitted like any
  // joiner, and the run goes on.
  EXPECT_TRUE(Status().paused());
  b = Join("b");
  ASSERT_NE(b, nullptr);
  AdmitThroughDonor(*a, *b, step);
  ASSERT_TRUE(a->SendPayload(step, Payload(step)).ok());
  ASSERT_TRUE(b->SendPayload(step, Payload(step)).ok());
  EXPECT_EQ(Expect(*b, Kind::kAggregate).step, step);
  EXPECT_EQ(Status().members_size(), 2);
}

TEST_F(CoordinatorServiceTest, RestartedCoordinatorResumesAtTheSavedStep) {
  const ScopedTempDir state("demod-state");
  const std::string& dir = state.path();
  Start(TestConfig(), "", {}, dir);
  auto a = SeedAndRunSteps(2);
  ASSERT_NE(a, nullptr);
  server_->Shutdown();
  Expect(*a, Kind::kShuttingDown);
  EXPECT_EQ(Expect(*a, Kind::kEnded).status.code(), absl::StatusCode::kUnavailable);
  a.reset();
  server_.reset();
  // The saved history ends with the members the shutdown sent away.
  absl::StatusOr<RunStore> store = RunStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::optional<PersistedRun>> saved = store->Load();
  ASSERT_TRUE(saved.ok() && saved->has_value()) << saved.status();
  ASSERT_FALSE((*saved)->history.empty());
  EXPECT_EQ((*saved)->history.back().worker, "a");
  EXPECT_EQ((*saved)->history.back().event, "leave");
  EXPECT_EQ((*saved)->history.back().reason, "the coordinator shut down");

  Start(TestConfig(), "", {}, dir);
  EXPECT_EQ(Status().completed_steps(), 2);
  ClientOptions wrong = Options("c");
  wrong.join.mutable_tensors(0)->set_shape(1, 64);
  EXPECT_EQ(CoordinatorClient::Connect(wrong).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A worker that trained nothing cannot become the seed of a run that has steps.
  EXPECT_EQ(CoordinatorClient::Connect(Options("new")).status().code(),
            absl::StatusCode::kUnavailable);
  a = Join("a", /*resume_step=*/2);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->welcome().completed_steps(), 2);
  EXPECT_EQ(Expect(*a, Kind::kActive).step, 3);
  ASSERT_TRUE(a->SendPayload(3, Payload(3)).ok());
  EXPECT_EQ(Expect(*a, Kind::kAggregate).step, 3);

  // Another run id on the same directory is refused.
  server_.reset();
  CoordinatorServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "";
  options.config = TestConfig();
  options.config.run_id = "another";
  options.state_dir = dir;
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> refused = CoordinatorServer::Start(options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("holds run 'loopback'"));
}

// A step's save completes while the next step runs, so a crash can leave the saved state one
// step behind the workers: the first worker back (the seed) brings that step with it.
TEST_F(CoordinatorServiceTest, RestartedCoordinatorTakesAStepItsSaveMissedFromTheSeed) {
  const ScopedTempDir state("demod-state");
  const std::string& dir = state.path();
  Start(TestConfig(), "", {}, dir);
  ASSERT_NE(SeedAndRunSteps(1), nullptr);
  server_->Shutdown();
  server_.reset();

  // The saved state says 1; worker "a" had also applied step 2 when the coordinator went.
  Start(TestConfig(), "", {}, dir);
  EXPECT_EQ(Status().completed_steps(), 1);
  auto seed = Join("a", /*resume_step=*/2);
  ASSERT_NE(seed, nullptr);
  EXPECT_EQ(seed->welcome().completed_steps(), 2);
  EXPECT_EQ(Expect(*seed, Kind::kActive).step, 3);
  EXPECT_EQ(Status().completed_steps(), 2);
  ASSERT_TRUE(seed->SendPayload(3, Payload(3)).ok());
  EXPECT_EQ(Expect(*seed, Kind::kAggregate).step, 3);
  server_->Shutdown();
  seed.reset();
  server_.reset();

  // Shutdown returned with the last step on disk.
  Start(TestConfig(), "", {}, dir);
  EXPECT_EQ(Status().completed_steps(), 3);
}

// A worker far behind the saved steps waits out the stale seed grace (UNAVAILABLE, with how
// long), then seeds the run; the steps undone are counted for the DemodSeedRolledBack alert.
TEST_F(CoordinatorServiceTest, AStaleSeedWaitsOutTheGraceAndItsRollbackIsCounted) {
  const ScopedTempDir state("demod-state");
  const std::string& dir = state.path();
  RunConfig config = TestConfig();
  config.stale_seed_grace = absl::Milliseconds(300);
  Start(config, "", {}, dir);
  ASSERT_NE(SeedAndRunSteps(4), nullptr);
  server_->Shutdown();
  server_.reset();

  Start(config, "", {}, dir, "127.0.0.1:0");
  // Its parameters are of step 1, the run's of step 4.
  ClientOptions stale = Options("a");
  stale.join.set_resume_step(1);
  const absl::Time first_try = absl::Now();
  const absl::Status waiting = CoordinatorClient::Connect(stale).status();
  EXPECT_EQ(waiting.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(waiting.message(), HasSubstr("parameters are of step 1: waiting"));
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> seed = waiting;
  while (!seed.ok() && absl::Now() - first_try < absl::Seconds(20)) {
    absl::SleepFor(absl::Milliseconds(50));
    seed = CoordinatorClient::Connect(stale);
  }
  ASSERT_TRUE(seed.ok()) << seed.status();
  EXPECT_GE(absl::Now() - first_try, absl::Milliseconds(300));
  EXPECT_EQ(Expect(**seed, Kind::kActive).step, 5);
  const std::string scrape = ValueOrStop(HttpGet(server_->metrics_port(), "/metrics"));
  EXPECT_EQ(Sample(scrape, "demod_seed_rollbacks_total"), 1);
  EXPECT_EQ(Sample(scrape, "demod_seed_rollback_steps_total"), 3);
}

// With batch balancing, each worker is told its share of the global batch when a step opens:
// evenly while nothing is measured, then in proportion to the throughput its reports show.
TEST_F(CoordinatorServiceTest, BatchSharesFollowTheReportedThroughput) {
  RunConfig config = TestConfig(/*min_workers=*/2);
  config.batch.global = 12;
  config.batch.balance = true;
  Start(config, "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  EXPECT_EQ(a->welcome().run().global_batch(), 12);
  // A worker's share comes before it is active, and every later change before the aggregate
  // of the step before the one it is for: it always has its share when it starts a step.
  EXPECT_EQ(Expect(*a, Kind::kBatchShare).batch_samples, 12u);  // alone so far
  Expect(*a, Kind::kActive);
  auto b = Join("b");
  TransferThroughDonor(*a, *b, 0);
  EXPECT_EQ(Expect(*b, Kind::kBatchShare).batch_samples, 6u);
  EXPECT_EQ(Expect(*b, Kind::kActive).step, 1);
  EXPECT_EQ(Expect(*a, Kind::kBatchShare).batch_samples, 6u);

  v1::StepReport report;
  report.set_step(1);
  report.set_compute_seconds(0.1);
  report.set_samples(8);  // 80 samples/s
  ASSERT_OK(a->SendReport(report));
  report.set_samples(4);  // 40 samples/s
  ASSERT_OK(b->SendReport(report));
  // Reports and payloads share each stream, so both reports are in when step 1 closes.
  ASSERT_OK(a->SendPayload(1, Payload(1)));
  ASSERT_OK(b->SendPayload(1, Payload(1)));
  EXPECT_EQ(Expect(*a, Kind::kBatchShare).batch_samples, 8u);
  EXPECT_EQ(Expect(*b, Kind::kBatchShare).batch_samples, 4u);
  EXPECT_EQ(Expect(*a, Kind::kAggregate).step, 1);
  EXPECT_EQ(Expect(*b, Kind::kAggregate).step, 1);

  const std::string scrape = ValueOrStop(HttpGet(server_->metrics_port(), "/metrics"));
  EXPECT_EQ(Sample(scrape, "demod_worker_batch_samples{worker=\"a\"}"), 8);
  EXPECT_EQ(Sample(scrape, "demod_worker_batch_samples{worker=\"b\"}"), 4);
  EXPECT_EQ(Sample(scrape, "demod_worker_samples_per_second{worker=\"b\"}"), 40);
}

// batch.weighting "samples": the aggregate weighs each payload by the samples its frames say,
// and a payload that does not say them ends its worker's stream with INVALID_ARGUMENT.
TEST_F(CoordinatorServiceTest, ContributionsWeighedBySamplesTheirFramesSay) {
  RunConfig config = TestConfig(/*min_workers=*/2);
  config.batch.weighting = Weighting::kSamples;
  Start(config);
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  auto b = Join("b");
  AdmitThroughDonor(*a, *b, 1);
  StepPayload pa, pb;
  const std::string encoded = Payload(1, &pa);
  ASSERT_GT(encoded.size(), 2u * config_.max_frame_bytes);  // several frames, each saying 12
  ASSERT_OK(a->SendPayload(1, encoded, 12));
  ASSERT_OK(b->SendPayload(1, Payload(1, &pb), 4));
  ClientEvent got = Expect(*a, Kind::kAggregate);
  const StepAggregate want = *AggregateStep({{a->worker_id(), &pa, 12}, {b->worker_id(), &pb, 4}},
                                            layouts_, Weighting::kSamples);
  EXPECT_EQ(*EncodeStepAggregate(want, layouts_), got.bytes);
  EXPECT_NE(*EncodeStepAggregate(
                *AggregateStep({{a->worker_id(), &pa}, {b->worker_id(), &pb}}, layouts_), layouts_),
            got.bytes);
  Expect(*b, Kind::kAggregate);

  ASSERT_OK(a->SendPayload(2, Payload(2), 12));
  ASSERT_OK(b->SendPayload(2, Payload(2)));  // samples not said
  ClientEvent ended = Expect(*b, Kind::kEnded);
  EXPECT_EQ(ended.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ended.status.message(), HasSubstr("does not say its samples"));
}

TEST_F(CoordinatorServiceTest, FailedStateSavesAreCountedAndTrainingGoesOn) {
  ScopedTempDir scratch("demod-state");
  const std::string dir = scratch.path() + "/state";
  Start(TestConfig(), "", {}, dir, "127.0.0.1:0");
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  // Every save from here on fails. The coordinator may be saving meanwhile (its join's save),
  // so the removal is retried until the directory is gone.
  std::error_code error;
  for (int i = 0; i < 100 && std::filesystem::exists(dir); ++i) {
    std::filesystem::remove_all(dir, error);
  }
  ASSERT_FALSE(std::filesystem::exists(dir)) << error.message();
  for (int64_t step = 1; step <= 3; ++step) {
    ASSERT_TRUE(a->SendPayload(step, Payload(step)).ok());
    EXPECT_EQ(Expect(*a, Kind::kAggregate).step, step);
  }
  absl::StatusOr<std::string> scrape = HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  // The saves of steps 1 and 2 were done (failed) before step 3's aggregate left.
  EXPECT_GE(Sample(*scrape, "demod_state_save_failures_total").value_or(0), 2);
}

TEST_F(CoordinatorServiceTest, BearerTokenIsRequiredOnEveryCall) {
  Start(TestConfig(), "s3cret");
  ClientOptions none = Options("a");
  EXPECT_EQ(CoordinatorClient::Connect(none).status().code(), absl::StatusCode::kUnauthenticated);
  ClientOptions wrong = Options("a");
  wrong.token = "s3cres";
  absl::Status refused = CoordinatorClient::Connect(wrong).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(refused.message(), ::testing::Not(HasSubstr("s3cret")));
  ClientOptions right = Options("a");
  right.token = "s3cret";
  EXPECT_OK(CoordinatorClient::Connect(right));

  Status();
  EXPECT_EQ(last_rpc_.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  Status("nope");
  EXPECT_EQ(last_rpc_.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  Status("s3cret");
  EXPECT_TRUE(last_rpc_.ok());
}

// A raw stream, for breaking the protocol on purpose.
struct RawStream {
  // With `small_receive_window` the stream's receive window stays small (no BDP probing, little
  // lookahead): messages it does not read back up into the coordinator's queue after a few
  // tens of kB.
  RawStream(const std::string& target, const v1::WorkerMessage& first,
            bool small_receive_window = false)
      : stub(v1::Coordinator::NewStub(Channel(target, small_receive_window))),
        stream(stub->Train(&context)) {
    stream->Write(first);
  }
  static std::shared_ptr<grpc::Channel> Channel(const std::string& target,
                                                bool small_receive_window) {
    grpc::ChannelArguments args;
    if (small_receive_window) {
      args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
      args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
    }
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  // Reads until the stream ends; returns its status.
  grpc::Status Drain() {
    v1::CoordinatorMessage m;
    while (stream->Read(&m)) {
    }
    return stream->Finish();
  }
  std::unique_ptr<v1::Coordinator::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream;
};

// Writes `payload` as the payload of `step`, in frames of at most `max_frame_bytes`.
bool WritePayloadFrames(grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>& stream,
                        int64_t step, const std::string& payload, int64_t max_frame_bytes) {
  for (const Frame& f : SplitIntoFrames(payload, max_frame_bytes)) {
    v1::WorkerMessage m;
    m.mutable_payload()->set_step(step);
    m.mutable_payload()->set_total_bytes(payload.size());
    m.mutable_payload()->set_offset(f.offset);
    m.mutable_payload()->set_data(std::string(f.data));
    if (!stream.Write(m)) return false;
  }
  return true;
}

v1::WorkerMessage JoinMessage(const std::string& name) {
  v1::WorkerMessage m;
  m.mutable_join()->set_protocol_version(v1::PROTOCOL_VERSION);
  m.mutable_join()->set_worker_name(name);
  *m.mutable_join()->mutable_tensors() = TensorSpecsOf(kShapes);
  return m;
}

// A worker that sends its payloads but stops reading its stream: what the coordinator queues
// for it (its parameters, then an aggregate per step) grows until it passes the bound, two
// windows of parameters and outbound_queue_steps aggregates; the worker is then evicted as a slow
// consumer, what was queued is dropped, and the others never wait for it.
TEST_F(CoordinatorServiceTest, WorkerThatStopsReadingIsEvictedAsASlowConsumer) {
  RunConfig config = TestConfig();
  config.outbound_queue_steps = 2;
  config.total_steps = 1000;
  Start(config, "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  RawStream stalled(target_, JoinMessage("stalled"), /*small_receive_window=*/true);
  ClientEvent request = Expect(*a, Kind::kSendState);
  ASSERT_OK(a->SendState(request, 0, std::string(10000, 'p')));

  uint64_t most_queued = 0;
  int64_t step = 1;
  for (; step <= 900 && Status().members_size() == 2; ++step) {
    // The stalled worker is active from step 2 (its parameters were relayed before step 1
    // closed): it keeps sending its payloads, it only never reads.
    if (step >= 2) {
      ASSERT_TRUE(WritePayloadFrames(*stalled.stream, step, Payload(step), config.max_frame_bytes));
    }
    ASSERT_OK(a->SendPayload(step, Payload(step)));
    EXPECT_EQ(Expect(*a, Kind::kAggregate).step, step);
    const v1::RunStatus status = Status();
    for (const v1::MemberStatus& m : status.members()) {
      if (m.name() == "stalled") most_queued = std::max(most_queued, m.queued_bytes());
    }
  }
  ASSERT_EQ(Status().members_size(), 1) << "still a member after " << step - 1 << " steps";
  EXPECT_GT(most_queued, 0u);
  const std::string scrape = ValueOrStop(HttpGet(server_->metrics_port(), "/metrics"));
  EXPECT_EQ(Sample(scrape, "demod_leaves_total{reason=\"slow_consumer\"}"), 1);
  // The run goes on with the worker that reads.
  for (int64_t next = step; next < step + 5; ++next) {
    ASSERT_OK(a->SendPayload(next, Payload(next)));
    EXPECT_EQ(Expect(*a, Kind::kAggregate).step, next);
  }
  // Once it reads again, it finds its stream ended with RESOURCE_EXHAUSTED and the reason.
  v1::CoordinatorMessage m;
  while (stalled.stream->Read(&m)) {
  }
  const grpc::Status end = stalled.stream->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << end.error_message();
  EXPECT_THAT(end.error_message(), HasSubstr("slow consumer"));
}

// Parameter transfers are pulled a window at a time: a joiner that does not read makes the
// coordinator ask its donor for about two windows, not for the whole state, and once it reads
// it receives every byte, of the one step the donor's copy was taken at.
TEST_F(CoordinatorServiceTest, JoinerThatDoesNotReadHoldsBackItsTransfer) {
  const RunConfig config = TestConfig();
  Start(config, "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  RawStream slow(target_, JoinMessage("slow"), /*small_receive_window=*/true);

  std::string parameters(1 << 20, '\0');
  for (size_t i = 0; i < parameters.size(); ++i)
    parameters[i] = static_cast<char>(i * 7 + i / 4096);
  StateDonor donor;
  uint64_t asked_up_to = 0;
  int copies_taken = 0;
  auto serve = [&](absl::Duration wait) {
    absl::StatusOr<ClientEvent> event = a->Next(wait);
    if (absl::IsDeadlineExceeded(event.status())) return;
    ASSERT_OK(event);
    ASSERT_EQ(event->kind, Kind::kSendState);
    asked_up_to = std::max(asked_up_to, event->state_offset + event->state_length);
    ASSERT_OK(donor.Serve(*a, *event, /*applied_step=*/0, [&] {
      ++copies_taken;
      return parameters;
    }));
  };
  const absl::Time stall_end = absl::Now() + absl::Milliseconds(1500);
  while (absl::Now() < stall_end) ASSERT_NO_FATAL_FAILURE(serve(absl::Milliseconds(50)));
  const uint64_t window = ParameterRelay::kWindowFrames * config.max_frame_bytes;
  std::printf("asked for %llu of %zu bytes while the joiner did not read (window %llu)\n",
              static_cast<unsigned long long>(asked_up_to), parameters.size(),
              static_cast<unsigned long long>(window));
  // Two windows, plus what the stream's flow-control window let through unread.
  EXPECT_GE(asked_up_to, window);
  EXPECT_LE(asked_up_to, 2 * window + (128 << 10));
  const v1::RunStatus status = Status();
  for (const v1::MemberStatus& m : status.members()) {
    if (m.name() == "slow") {
      EXPECT_LE(m.queued_bytes(), 2 * window + 4096);
    }
  }

  // The joiner reads: the rest is pulled as it drains.
  std::future<std::string> received = std::async(std::launch::async, [&] {
    std::string bytes;
    v1::CoordinatorMessage m;
    while (bytes.size() < parameters.size() && slow.stream->Read(&m)) {
      if (!m.has_state()) continue;
      if (m.state().offset() != bytes.size() || m.state().total_bytes() != parameters.size()) {
        break;
      }
      bytes += m.state().data();
    }
    return bytes;
  });
  const absl::Time give_up = absl::Now() + kWait;
  while (received.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
         absl::Now() < give_up) {
    ASSERT_NO_FATAL_FAILURE(serve(absl::Milliseconds(20)));
  }
  ASSERT_EQ(received.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_TRUE(received.get() == parameters);
  EXPECT_EQ(copies_taken, 1);
  EXPECT_EQ(donor.copies(), 0u);  // the last range dropped the copy
}

// A joiner that leaves mid-transfer ends it at its donor too: the coordinator asks for a range
// of length 0, and the donor drops the copy it was serving from.
TEST_F(CoordinatorServiceTest, AJoinerLeavingMidTransferEndsItAtTheDonor) {
  const RunConfig config = TestConfig();
  Start(config, "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  auto slow = std::make_unique<RawStream>(target_, JoinMessage("slow"),
                                          /*small_receive_window=*/true);
  const std::string parameters(1 << 20, 'p');
  StateDonor donor;
  ClientEvent request = Expect(*a, Kind::kSendState);
  ASSERT_EQ(request.state_offset, 0u);
  ASSERT_OK(donor.Serve(*a, request, 0, [&] { return parameters; }));
  EXPECT_EQ(donor.copies(), 1u);
  slow->context.TryCancel();
  // Further windows may have been asked for before the coordinator saw the joiner go.
  do {
    request = Expect(*a, Kind::kSendState);
    ASSERT_OK(donor.Serve(*a, request, 0, [&] { return parameters; }));
  } while (request.state_length != 0);
  EXPECT_EQ(donor.copies(), 0u);
}

// A joiner holds its parameters once its stream has written them, not once they are queued:
// until then it is not expected at any step (on a slow link it could not reach them).
TEST_F(CoordinatorServiceTest, AJoinerIsActiveOnlyOnceItsStreamHasTakenItsParameters) {
  RunConfig config = TestConfig();
  config.max_frame_bytes = 16384;  // one window (64 kB) is far more than the stream takes unread
  Start(config, "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  RawStream slow(target_, JoinMessage("slow"), /*small_receive_window=*/true);
  // One window: every byte is sent at once, and most of it waits in the coordinator.
  const std::string parameters(ParameterRelay::kWindowFrames * config.max_frame_bytes, 'p');
  StateDonor donor;
  const auto slow_is_active = [&] {
    const v1::RunStatus status = Status();
    for (const v1::MemberStatus& m : status.members()) {
      if (m.name() == "slow") return m.active();
    }
    return false;
  };
  int64_t step = 1;
  const auto run_step = [&] {
    ASSERT_OK(a->SendPayload(step, Payload(step)));
    while (true) {
      ClientEvent event = Next(*a);
      if (event.kind == Kind::kSendState) {
        ASSERT_OK(donor.Serve(*a, event, step - 1, [&] { return parameters; }));
        continue;
      }
      ASSERT_EQ(event.kind, Kind::kAggregate);
      ASSERT_EQ(event.step, step);
      break;
    }
    ++step;
  };
  for (int i = 0; i < 4; ++i) {
    ASSERT_NO_FATAL_FAILURE(run_step());
    EXPECT_FALSE(slow_is_active()) << "after step " << step - 1;
  }
  EXPECT_EQ(donor.copies(), 0u);  // every byte was sent

  // The joiner reads: it takes the rest, and is active from the next boundary on.
  std::atomic<bool> holds_parameters{false};
  std::thread reader([&] {
    uint64_t bytes = 0;
    v1::CoordinatorMessage m;
    while (slow.stream->Read(&m)) {
      if (m.has_state() && (bytes += m.state().data().size()) == parameters.size()) {
        holds_parameters = true;
      }
    }
  });
  const absl::Time give_up = absl::Now() + kWait;
  while (!holds_parameters && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_TRUE(holds_parameters);
  for (int i = 0; i < 3 && !slow_is_active(); ++i) ASSERT_NO_FATAL_FAILURE(run_step());
  EXPECT_TRUE(slow_is_active());
  slow.context.TryCancel();
  reader.join();
}

TEST_F(CoordinatorServiceTest, MalformedFramesEndOnlyTheirStream) {
  Start(TestConfig());
  auto a = Join("a");
  Expect(*a, Kind::kActive);

  struct Case {
    std::string name;
    v1::WorkerMessage message;
    std::string reason;
  };
  std::vector<Case> cases;
  {
    v1::WorkerMessage m;
    m.mutable_payload()->set_step(1);
    m.mutable_payload()->set_total_bytes(100);
    m.mutable_payload()->set_offset(5);  // a gap
    m.mutable_payload()->set_data("xx");
    cases.push_back({"gap", m, "offset"});
  }
  {
    v1::WorkerMessage m;
    m.mutable_payload()->set_step(1);
    m.mutable_payload()->set_total_bytes(8);
    m.mutable_payload()->set_data("garbage!");  // complete, but not a payload
    cases.push_back({"garbage", m, "payload of step 1"});
  }
  {
    v1::WorkerMessage m;
    m.mutable_payload()->set_step(1);
    m.mutable_payload()->set_total_bytes(uint64_t{1} << 40);
    m.mutable_payload()->set_data("x");
    cases.push_back({"huge", m, "1099511627776"});
  }
  {
    v1::WorkerMessage m = JoinMessage("again");
    cases.push_back({"second join", m, "second join"});
  }
  {
    v1::WorkerMessage m;
    m.mutable_fingerprint()->set_step(50);
    cases.push_back({"future fingerprint", m, "has not closed"});
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    RawStream raw(target_, JoinMessage(absl::StrCat("raw", i)));
    // Wait for the welcome before misbehaving, so the join itself is not what fails.
    v1::CoordinatorMessage welcome;
    ASSERT_TRUE(raw.stream->Read(&welcome));
    ASSERT_TRUE(welcome.has_welcome());
    raw.stream->Write(cases[i].message);
    grpc::Status status = raw.Drain();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr(cases[i].reason));
  }
  {
    // A well-formed payload whose values are not in the run's encoding (f32), in frames.
    std::mt19937_64 random(3);
    const LayoutTable layouts = Layouts(TestConfig());
    const std::string bf16 =
        *EncodeStepPayload(SyntheticPayload(layouts, 1, ValueEncoding::kBFloat16, random), layouts);
    RawStream raw(target_, JoinMessage("bf16"));
    v1::CoordinatorMessage welcome;
    ASSERT_TRUE(raw.stream->Read(&welcome));
    WritePayloadFrames(*raw.stream, 1, bf16, TestConfig().max_frame_bytes);
    grpc::Status status = raw.Drain();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("values in bf16, the run's are f32"));
  }
  {
    v1::WorkerMessage heartbeat;
    heartbeat.mutable_heartbeat();
    RawStream raw(target_, heartbeat);
    grpc::Status status = raw.Drain();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("must be a join"));
  }
  {
    // Bytes that are no protobuf at all (0xff: field 31 of wire type 7, which does not exist).
    const std::string garbage("\xff\xff\xff", 3);
    grpc::Status status = TrainWithBytes(target_, {garbage});
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("not a demod.v1.WorkerMessage"));
    // The same after a join: the member is removed as for any invalid message.
    status = TrainWithBytes(target_, {JoinMessage("garbler").SerializeAsString(), garbage});
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("not a demod.v1.WorkerMessage"));
  }
  // a was never disturbed (beyond being asked to donate to joiners that are gone): its steps
  // go on.
  for (int64_t step = 1; step <= 2; ++step) {
    ASSERT_TRUE(a->SendPayload(step, Payload(step)).ok());
    ClientEvent event = Next(*a);
    while (event.kind == Kind::kSendState) event = Next(*a);
    EXPECT_EQ(event.kind, Kind::kAggregate);
  }
  EXPECT_EQ(Status().members_size(), 1);
}

TEST_F(CoordinatorServiceTest, JoinsThatCannotBeAdmittedAreRefusedWithTheReason) {
  Start(TestConfig());
  auto a = Join("a");
  ASSERT_NE(a, nullptr);

  ClientOptions shape = Options("b");
  shape.join.mutable_tensors(2)->set_shape(0, 16);
  absl::Status refused = CoordinatorClient::Connect(shape).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("w2"));

  EXPECT_EQ(CoordinatorClient::Connect(Options("a")).status().code(),
            absl::StatusCode::kAlreadyExists);
  ClientOptions bad_name = Options("bad name\n");
  EXPECT_EQ(CoordinatorClient::Connect(bad_name).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions other_run = Options("c");
  other_run.join.set_run_id("other");
  EXPECT_EQ(CoordinatorClient::Connect(other_run).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ClientOptions empty = Options("d");
  empty.join.clear_tensors();
  EXPECT_EQ(CoordinatorClient::Connect(empty).status().code(), absl::StatusCode::kInvalidArgument);
  // The hardware names a metric's labels: an unknown kind or an unprintable or overlong name
  // is refused, not exported.
  ClientOptions unknown_kind = Options("f");
  unknown_kind.join.mutable_hardware()->set_device_kind(static_cast<v1::DeviceKind>(7));
  EXPECT_EQ(CoordinatorClient::Connect(unknown_kind).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions unprintable = Options("g");
  unprintable.join.mutable_hardware()->set_device_name("GPU\n\x01");
  refused = CoordinatorClient::Connect(unprintable).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("device_name"));
  ClientOptions overlong = Options("h");
  overlong.join.mutable_hardware()->set_device_name(std::string(129, 'x'));
  EXPECT_EQ(CoordinatorClient::Connect(overlong).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions nowhere = Options("e");
  nowhere.target = "127.0.0.1:1";
  nowhere.connect_timeout = absl::Milliseconds(200);
  EXPECT_EQ(CoordinatorClient::Connect(nowhere).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(CoordinatorServiceTest, SilentStreamIsEvictedAfterTheHeartbeatTimeout) {
  RunConfig config = TestConfig();
  config.heartbeat_timeout = absl::Milliseconds(600);
  Start(config);
  auto a = Join("a");  // sends heartbeats on its own
  Expect(*a, Kind::kActive);
  RawStream raw(target_, JoinMessage("mute"));  // never says anything again
  grpc::Status status = raw.Drain();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(status.error_message(), HasSubstr("no message for"));
  absl::SleepFor(absl::Milliseconds(700));
  v1::RunStatus run = Status();
  ASSERT_EQ(run.members_size(), 1);
  EXPECT_EQ(run.members(0).name(), "a");
}

// `raw` (just joined behind `seed`, the only member) receives the seed's parameters.
void ReceiveSeedParameters(CoordinatorClient& seed, RawStream& raw) {
  v1::CoordinatorMessage m;
  ASSERT_TRUE(raw.stream->Read(&m) && m.has_welcome());
  absl::StatusOr<ClientEvent> request = seed.Next(kWait);
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_EQ(request->kind, Kind::kSendState);
  ASSERT_EQ(request->joiner, m.welcome().worker_id());
  ASSERT_TRUE(seed.SendState(*request, 0, "seed parameters").ok());
  ASSERT_TRUE(raw.stream->Read(&m) && m.has_state());
}

// Reads `raw`'s stream up to the request to send its parameters to `joiner`.
void AwaitStateRequest(RawStream& raw, uint32_t joiner) {
  v1::CoordinatorMessage m;
  while (raw.stream->Read(&m) &&
         !(m.has_control() && m.control().kind() == v1::Control::KIND_SEND_STATE)) {
  }
  ASSERT_EQ(m.control().joiner_id(), joiner);
}

// The seed a holds the run's parameters and has sent them to b, a raw stream (so it can
// misbehave as a donor); c has joined since, and the coordinator asked b to serve it (donors
// are taken in turn).
class RawDonorTest : public CoordinatorServiceTest {
 protected:
  void StartWithRawDonor(RunConfig config = TestConfig()) {
    Start(config);
    a_ = Join("a");
    Expect(*a_, Kind::kActive);
    b_ = std::make_unique<RawStream>(target_, JoinMessage("b"));
    ReceiveSeedParameters(*a_, *b_);
    c_ = Join("c");
    ASSERT_TRUE(c_->welcome().receives_state());
    AwaitStateRequest(*b_, c_->worker_id());
  }

  // b sends c a frame of its parameters.
  bool SendFrameToC(uint64_t total_bytes, uint64_t offset, std::string data,
                    const std::string& unknown_fields = "") {
    v1::WorkerMessage frame;
    v1::StateFrame& state = *frame.mutable_state();
    state.set_joiner_id(c_->worker_id());
    state.set_total_bytes(total_bytes);
    state.set_offset(offset);
    state.set_data(std::move(data));
    if (!unknown_fields.empty() &&
        !state.ParseFromString(state.SerializeAsString() + unknown_fields)) {
      return false;
    }
    return b_->stream->Write(frame);
  }

  // a is asked next; c starts over and gets a's parameters whole.
  void AIsAskedAndCompletesTheTransfer() {
    ClientEvent request = Expect(*a_, Kind::kSendState);
    ASSERT_EQ(request.joiner, c_->worker_id());
    ASSERT_TRUE(a_->SendState(request, 0, std::string(10000, 'a')).ok());
    EXPECT_EQ(Expect(*c_, Kind::kState).bytes, std::string(10000, 'a'));
  }

  std::unique_ptr<CoordinatorClient> a_;
  std::unique_ptr<RawStream> b_;
  std::unique_ptr<CoordinatorClient> c_;
};

TEST_F(RawDonorTest, DonorLeavingMidTransferIsReplaced) {
  ASSERT_NO_FATAL_FAILURE(StartWithRawDonor());
  // b sends the first of three frames and leaves.
  ASSERT_TRUE(SendFrameToC(10000, 0, std::string(4096, 'b')));
  absl::SleepFor(absl::Milliseconds(100));  // let the frame reach c
  b_->context.TryCancel();
  ASSERT_NO_FATAL_FAILURE(AIsAskedAndCompletesTheTransfer());
  // Step 1 was open while c was syncing: c catches up with its aggregate, then contributes.
  ASSERT_TRUE(a_->SendPayload(1, Payload(1)).ok());
  EXPECT_EQ(Expect(*c_, Kind::kAggregate).step, 1);
  EXPECT_EQ(Expect(*c_, Kind::kActive).step, 2);
}

// b stays (it sends heartbeats) but its transfer stops after one frame: after the heartbeat
// timeout a serves c instead, and b's late frame is ignored, not held against it.
TEST_F(RawDonorTest, StalledDonorIsReplacedWhileItStays) {
  RunConfig config = TestConfig();
  config.heartbeat_timeout = absl::Milliseconds(900);
  ASSERT_NO_FATAL_FAILURE(StartWithRawDonor(config));
  ASSERT_TRUE(SendFrameToC(10000, 0, std::string(4096, 'b')));
  v1::WorkerMessage heartbeat;
  heartbeat.mutable_heartbeat();
  for (int i = 0; i < 8; ++i) {  // 1.6 s of heartbeats and no frames
    absl::SleepFor(absl::Milliseconds(200));
    ASSERT_TRUE(b_->stream->Write(heartbeat));
  }
  ASSERT_NO_FATAL_FAILURE(AIsAskedAndCompletesTheTransfer());
  ASSERT_TRUE(SendFrameToC(10000, 4096, std::string(4096, 'b')));  // b wakes up, too late
  ASSERT_TRUE(b_->stream->Write(heartbeat));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Status().members_size(), 3);
}

TEST_F(RawDonorTest, StateFramesAreCheckedInEitherEncoding) {
  ASSERT_NO_FATAL_FAILURE(StartWithRawDonor());
  // Frame 1 carries a field this coordinator does not know (field 15, varint 1), so it is
  // parsed rather than relayed as it came; frame 2 is protobuf's own encoding, read without
  // parsing its data, and leaves a gap.
  ASSERT_TRUE(SendFrameToC(10000, 0, std::string(3000, 'b'), std::string("\x78\x01", 2)));
  ASSERT_TRUE(SendFrameToC(10000, 3001, std::string(2000, 'b')));
  const grpc::Status status = b_->Drain();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("at offset 3001 with 2000 bytes of 10000"));
  EXPECT_THAT(status.error_message(), HasSubstr("expected offset 3000 of 10000"));  // frame 1
  ASSERT_NO_FATAL_FAILURE(AIsAskedAndCompletesTheTransfer());
}

TEST_F(CoordinatorServiceTest, DivergentFingerprintIsResyncedFromTheMajority) {
  Start(TestConfig(/*min_workers=*/3));
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  auto b = Join("b");
  AdmitThroughDonor(*a, *b, 1);
  auto c = Join("c");
  {
    ClientEvent request = Next(*b);  // b's turn as donor
    ASSERT_EQ(request.kind, Kind::kSendState);
    ASSERT_TRUE(b->SendState(request, 0, "params").ok());
    Expect(*c, Kind::kState);
    Expect(*c, Kind::kActive);
  }
  for (auto* w : {a.get(), b.get(), c.get()}) ASSERT_TRUE(w->SendPayload(1, Payload(1)).ok());
  for (auto* w : {a.get(), b.get(), c.get()}) Expect(*w, Kind::kAggregate);
  ASSERT_TRUE(a->SendFingerprint(1, 111).ok());
  ASSERT_TRUE(b->SendFingerprint(1, 222).ok());  // the odd one out
  ASSERT_TRUE(c->SendFingerprint(1, 111).ok());
  Expect(*b, Kind::kResync);
  // A member outside the divergent ones donates.
  ClientEvent request = Next(*a);
  CoordinatorClient* donor = a.get();
  if (request.kind != Kind::kSendState) {
    request = Expect(*c, Kind::kSendState);
    donor = c.get();
  }
  EXPECT_EQ(request.joiner, b->worker_id());
  ASSERT_TRUE(donor->SendState(request, 1, "fresh").ok());
  EXPECT_EQ(Expect(*b, Kind::kState).bytes, "fresh");
}

// After the last step the streams stay open for the workers' last news: a worker's stream
// ends once it reports the last step, and one that never does is ended kFinishGrace later.
TEST_F(CoordinatorServiceTest, FinishedRunEndsEveryStreamAndRefusesJoins) {
  RunConfig config = TestConfig(/*min_workers=*/2);
  config.total_steps = 2;
  Start(config, "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  auto b = Join("b");
  AdmitThroughDonor(*a, *b, 1);
  for (int64_t step = 1; step <= 2; ++step) {
    for (auto* w : {a.get(), b.get()}) ASSERT_TRUE(w->SendPayload(step, Payload(step)).ok());
    for (auto* w : {a.get(), b.get()}) Expect(*w, Kind::kAggregate);
  }
  for (auto* w : {a.get(), b.get()}) Expect(*w, Kind::kFinished);
  v1::StepReport last;
  last.set_step(2);
  last.set_loss(1.5);
  last.set_validation_loss(std::nan(""));
  last.set_tokens(777);
  last.set_compute_seconds(0.1);
  ASSERT_OK(a->SendReport(last));
  EXPECT_OK(Expect(*a, Kind::kEnded).status);
  // b said nothing after the last step: its stream is still open, until the grace ends.
  EXPECT_TRUE(absl::IsDeadlineExceeded(b->Next(absl::Milliseconds(100)).status()));
  EXPECT_OK(Expect(*b, Kind::kEnded).status);
  EXPECT_EQ(CoordinatorClient::Connect(Options("late")).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(Status().finished());

  absl::SleepFor(absl::Milliseconds(200));  // the leaves are processed
  const std::string scrape = ValueOrStop(HttpGet(server_->metrics_port(), "/metrics"));
  EXPECT_EQ(Sample(scrape, "demod_tokens_total{worker=\"a\"}"), 777);
  EXPECT_EQ(Sample(scrape, "demod_leaves_total{reason=\"finished\"}"), 2);
  EXPECT_EQ(Sample(scrape, "demod_leaves_total{reason=\"disconnected\"}"), 0);
}

TEST_F(CoordinatorServiceTest, LiveScrapeShowsTheRunAndPassesPromtool) {
  Start(TestConfig(/*min_workers=*/2), "", {}, "", "127.0.0.1:0");
  auto a = Join("a");
  Expect(*a, Kind::kActive);
  auto b = Join("b");
  AdmitThroughDonor(*a, *b, 1);
  for (int64_t step = 1; step <= 2; ++step) {
    for (auto* w : {a.get(), b.get()}) ASSERT_TRUE(w->SendPayload(step, Payload(step)).ok());
    for (auto* w : {a.get(), b.get()}) Expect(*w, Kind::kAggregate);
    v1::StepReport report;
    report.set_step(step);
    report.set_loss(3.0 - step);
    report.set_validation_loss(std::nan(""));
    report.set_tokens(1000);
    report.set_compute_seconds(0.5);
    ASSERT_TRUE(a->SendReport(report).ok());
  }
  b->Close();
  absl::SleepFor(absl::Milliseconds(200));  // the report and the leave are processed

  absl::StatusOr<std::string> scrape = HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  EXPECT_EQ(Sample(*scrape, "demod_steps_total"), 2);
  EXPECT_EQ(Sample(*scrape, "demod_current_step"), 2);
  EXPECT_EQ(Sample(*scrape, "demod_total_steps"), 100);
  EXPECT_EQ(Sample(*scrape, "demod_min_workers"), 2);
  const RunConfig config = TestConfig();
  // The exposition prints doubles rounded.
  const double lr = LearningRateAt(config.optimizer.lr, 2, config.total_steps);
  EXPECT_NEAR(Sample(*scrape, "demod_learning_rate").value_or(0), lr, lr * 1e-6);
  EXPECT_EQ(Sample(*scrape, "demod_active_workers"), 1);
  EXPECT_EQ(Sample(*scrape, "demod_joins_total"), 2);
  EXPECT_EQ(Sample(*scrape, "demod_leaves_total{reason=\"disconnected\"}"), 1);
  EXPECT_EQ(Sample(*scrape, "demod_state_transfers_total"), 1);
  // What an fp32 all-reduce would have moved: every parameter, from both workers, twice.
  EXPECT_EQ(Sample(*scrape, "demod_dense_equivalent_bytes_total"), 133248.0 * 4 * 2 * 2);
  EXPECT_EQ(Sample(*scrape, "demod_training_loss{worker=\"a\"}"), 1.0);
  EXPECT_EQ(Sample(*scrape, "demod_tokens_per_second{worker=\"a\"}"), 2000.0);
  EXPECT_EQ(Sample(*scrape,
                   "demod_worker_info{device_kind=\"cpu\",device_name=\"test cpu\","
                   "worker=\"a\"}"),
            1);
  EXPECT_THAT(*scrape, Not(HasSubstr("worker=\"b\"} 1")));
  EXPECT_EQ(Sample(*scrape, "demod_step_duration_seconds_count"), 2);
  EXPECT_GT(Sample(*scrape, "demod_worker_received_bytes_total{worker=\"b\"}").value_or(0), 0);
  EXPECT_EQ(Sample(*scrape, "demod_received_bytes_total"),
            Status().members(0).bytes_received() +
                Sample(*scrape, "demod_worker_received_bytes_total{worker=\"b\"}").value_or(0));
  std::optional<std::string> promtool = FindProgram("promtool");
  ASSERT_TRUE(promtool.has_value()) << "promtool is missing: scripts/setup.sh installs it";
  CommandResult lint = PromtoolCheckMetrics(*promtool, *scrape);
  EXPECT_EQ(lint.exit_code, 0) << lint.output;
  EXPECT_EQ(lint.output, "");
}

// Runs a shell command, expecting success; returns its output.
std::string RunShell(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  const int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << command << "\n" << out;
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST_F(CoordinatorServiceTest, TlsAndMutualTls) {
  const ScopedTempDir tls_files("demod-tls");
  const std::string& dir = tls_files.path();
  // A CA, a server certificate for localhost and a client certificate, all signed by the CA.
  RunShell(
      absl::StrCat("cd ", dir, " && exec 2>&1 && ",
                   "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
                   "-subj /CN=demod-test-ca && ",
                   "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
                   "-subj /CN=localhost && ",
                   "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext && ",
                   "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                   "-out server.pem -days 2 -extfile san.ext && ",
                   "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
                   "-subj /CN=worker && ",
                   "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                   "-out client.pem -days 2"));
  TlsFiles tls{ReadFile(dir + "/server.pem"), ReadFile(dir + "/server.key"),
               ReadFile(dir + "/ca.pem")};
  Start(TestConfig(), "", tls);
  target_ = absl::StrCat("localhost:", server_->port());

  ClientOptions plaintext = Options("plain");
  plaintext.connect_timeout = absl::Milliseconds(500);
  EXPECT_FALSE(CoordinatorClient::Connect(plaintext).ok());
  ClientOptions no_client_cert = Options("anonymous");
  no_client_cert.tls = ClientTls{ReadFile(dir + "/ca.pem"), "", ""};
  no_client_cert.connect_timeout = absl::Milliseconds(500);
  EXPECT_FALSE(CoordinatorClient::Connect(no_client_cert).ok());
  ClientOptions mutual = Options("mutual");
  mutual.tls = ClientTls{ReadFile(dir + "/ca.pem"), ReadFile(dir + "/client.pem"),
                         ReadFile(dir + "/client.key")};
  auto a = CoordinatorClient::Connect(mutual);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(Expect(**a, Kind::kActive).step, 1);
  ASSERT_TRUE((*a)->SendPayload(1, Payload(1)).ok());
  EXPECT_EQ(Expect(**a, Kind::kAggregate).step, 1);

  // TLS without a client CA: any client that trusts the server's certificate may connect.
  a->reset();
  server_.reset();
  Start(TestConfig(), "",
        TlsFiles{ReadFile(dir + "/server.pem"), ReadFile(dir + "/server.key"), ""});
  target_ = absl::StrCat("localhost:", server_->port());
  ClientOptions server_only = Options("anonymous");
  server_only.tls = ClientTls{ReadFile(dir + "/ca.pem"), "", ""};
  auto b = CoordinatorClient::Connect(server_only);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(Expect(**b, Kind::kActive).step, 1);
  EXPECT_FALSE(CoordinatorClient::Connect(plaintext).ok());
}

TEST_F(CoordinatorServiceTest, HealthServiceReportsServing) {
  Start(TestConfig());
  grpc::GenericStub stub(grpc::CreateChannel(target_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::ByteBuffer request;  // HealthCheckRequest{service: ""} is empty
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

}  // namespace
}  // namespace demod
