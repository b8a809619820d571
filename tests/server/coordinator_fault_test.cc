// The coordinator under misbehaving workers (ctest label "fault", about 20 s). Two steady
// workers train throughout, while chaotic ones come and go: they leave at any moment (mid-step,
// mid-transfer), leave as soon as they are asked to donate parameters, send garbage or a payload
// that does not decode, send a payload after its step closed, go silent until evicted, or join
// with another tensor table. Each misbehaviour must get its documented answer, and the run must
// go on: the steady workers keep receiving aggregates, byte-identical for every step, and every
// joiner receives the run's parameters exactly, whichever donors left on the way.
//
// DEMOD_FAULT_SEED replays a schedule's random choices (thread timing still varies);
// DEMOD_FAULT_SECONDS sets how long the chaos lasts.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "common/status_macros.h"
#include "server/coordinator_server.h"
#include "tests/support/raw_train_call.h"
#include "tests/support/status_matchers.h"
#include "tests/support/synthetic_payload.h"
#include "tests/support/synthetic_worker.h"
#include "worker/client/coordinator_client.h"
#include "worker/client/state_donor.h"

namespace demod {
namespace {

using Kind = ClientEvent::Kind;

const std::vector<std::pair<std::string, std::vector<int64_t>>> kShapes = {{"w", {64, 128}},
                                                                           {"b", {64}}};
constexpr absl::Duration kStepDeadline = absl::Milliseconds(400);
// No single reaction of the coordinator that a worker waits for takes this long.
constexpr absl::Duration kPatience = absl::Seconds(10);

RunConfig FaultConfig() {
  RunConfig c;
  c.run_id = "faults";
  c.min_workers = 2;
  c.max_workers = 16;
  c.total_steps = 1000000;
  c.fingerprint_interval = 0;
  c.optimizer.compression_chunk = 64;
  c.optimizer.compression_topk = 16;
  c.optimizer.value_encoding = ValueEncoding::kFloat32;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = kStepDeadline;
  c.max_missed_steps = 3;  // a steady worker starved by a loaded machine is not evicted
  c.heartbeat_timeout = absl::Seconds(5);
  c.max_frame_bytes = 4096;  // payloads and parameters travel in several frames
  return c;
}

int64_t EnvOr(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  return value == nullptr ? fallback : std::strtoll(value, nullptr, 10);
}

enum class Misbehavior {
  kHonest,              // contributes a few steps, then leaves
  kLeavesAnytime,       // leaves after a random moment: mid-step, mid-transfer, while joining
  kDonorLeaves,         // leaves as soon as it is asked for parameters (else as kHonest)
  kUndecodablePayload,  // -> INVALID_ARGUMENT
  kLatePayload,         // sends after the step's deadline -> NOT_INCLUDED
  kSilent,              // stops sending payloads -> EVICTED, then ABORTED
  kGarbage,             // bytes that are not a WorkerMessage -> INVALID_ARGUMENT
  kWrongTable,          // -> FAILED_PRECONDITION
};
constexpr int kMisbehaviors = static_cast<int>(Misbehavior::kWrongTable) + 1;

const char* Name(Misbehavior m) {
  static const char* const kNames[] = {
      "honest",       "leaves-anytime", "donor-leaves", "undecodable-payload",
      "late-payload", "silent",         "garbage",      "wrong-table"};
  static_assert(std::size(kNames) == kMisbehaviors);
  return kNames[static_cast<int>(m)];
}

class FaultRun {
 public:
  FaultRun(std::string target, LayoutTable layouts)
      : target_(std::move(target)), layouts_(std::move(layouts)), parameters_(20000, '\0') {
    for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i] = static_cast<char>(i * 131);
  }

  ClientOptions Options(const std::string& name) const {
    return SyntheticWorkerOptions(target_, name, kShapes);
  }

  std::string Payload(int64_t step, std::mt19937_64& random) const {
    return *EncodeStepPayload(SyntheticPayload(layouts_, step, ValueEncoding::kFloat32, random),
                              layouts_);
  }

  // A worker's ordinary answers: payloads once active, parameters for joiners. Returns the
  // step of the payload it should send now, if any.
  struct Honest {
    bool active = false;
    int64_t applied = 0;  // the last aggregate's step: the parameters are "after" it
    StateDonor donor;     // pins a transfer's step across the ranges it is pulled in
  };
  absl::StatusOr<std::optional<int64_t>> Answer(CoordinatorClient& client, Honest& state,
                                                const ClientEvent& event) const {
    switch (event.kind) {
      case Kind::kActive:
        state.active = true;
        return std::optional<int64_t>(event.step);
      case Kind::kAggregate:
        if (absl::StatusOr<StepAggregate> a = DecodeStepAggregate(event.bytes, layouts_); !a.ok()) {
          return absl::InternalError(absl::StrCat("aggregate of step ", event.step,
                                                  " does not decode: ", a.status().message()));
        }
        state.applied = event.step;
        return state.active ? std::optional<int64_t>(event.step + 1) : std::nullopt;
      case Kind::kSendState:
        if (absl::Status s =
                state.donor.Serve(client, event, state.applied, [&] { return parameters_; });
            !s.ok()) {
          return s;
        }
        return std::optional<int64_t>();
      case Kind::kState:
        if (event.bytes != parameters_) {
          return absl::InternalError(absl::StrCat("received ", event.bytes.size(),
                                                  " bytes of parameters that are not the run's"));
        }
        return std::optional<int64_t>();
      case Kind::kNotIncluded:
      case Kind::kPaused:
        return std::optional<int64_t>();
      default:
        return absl::InternalError(absl::StrCat("unexpected '", ClientEventKindName(event.kind),
                                                "' event: ", event.reason, " ",
                                                event.status.ToString()));
    }
  }

  // The next event within kPatience.
  static absl::StatusOr<ClientEvent> Next(CoordinatorClient& client) {
    return client.Next(kPatience);
  }

  // One chaotic worker's life: joins, misbehaves, and checks the coordinator's answer. A worker
  // still contributing when `stop` is set leaves then.
  absl::Status Live(Misbehavior m, const std::string& name, std::mt19937_64& random,
                    const std::atomic<bool>& stop) const {
    if (m == Misbehavior::kGarbage) {
      v1::WorkerMessage join;
      *join.mutable_join() = Options(name).join;
      join.mutable_join()->set_protocol_version(v1::PROTOCOL_VERSION);
      const grpc::Status status =
          TrainWithBytes(target_, {join.SerializeAsString(), std::string("\xff\xff\xff", 3)});
      return Expect(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT,
                    "garbage ended the stream with ", status.error_code(), ": ",
                    status.error_message());
    }
    if (m == Misbehavior::kWrongTable) {
      ClientOptions options = Options(name);
      options.join.mutable_tensors()->Mutable(0)->set_shape(0, 65);
      absl::StatusOr<std::unique_ptr<CoordinatorClient>> refused =
          CoordinatorClient::Connect(std::move(options));
      return Expect(absl::IsFailedPrecondition(refused.status()),
                    "another tensor table got: ", refused.status().ToString());
    }
    DEMOD_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                           CoordinatorClient::Connect(Options(name)));
    const absl::Time leave_at =
        absl::Now() + absl::Milliseconds(std::uniform_int_distribution<int>(0, 800)(random));
    const int quota = std::uniform_int_distribution<int>(1, 4)(random);
    int contributed = 0;
    Honest state;
    while (!stop.load()) {
      if (m == Misbehavior::kLeavesAnytime && absl::Now() >= leave_at) break;
      absl::StatusOr<ClientEvent> event =
          client->Next(m == Misbehavior::kLeavesAnytime ? leave_at - absl::Now() : kPatience);
      if (m == Misbehavior::kLeavesAnytime && absl::IsDeadlineExceeded(event.status())) break;
      if (!event.ok()) return event.status();
      if (m == Misbehavior::kDonorLeaves && event->kind == Kind::kSendState) break;
      if (m == Misbehavior::kSilent && event->kind == Kind::kEvicted) {
        absl::StatusOr<ClientEvent> end = Next(*client);
        return Expect(end.ok() && end->kind == Kind::kEnded && absl::IsAborted(end->status),
                      "after EVICTED: ", end.ok() ? end->status.ToString() : "no end");
      }
      DEMOD_ASSIGN_OR_RETURN(std::optional<int64_t> send, Answer(*client, state, *event));
      if (!send.has_value()) continue;
      switch (m) {
        case Misbehavior::kSilent:
          break;
        case Misbehavior::kUndecodablePayload: {
          std::string junk(std::uniform_int_distribution<int>(1, 9000)(random), '\0');
          for (char& c : junk) c = static_cast<char>(random());
          (void)client->SendPayload(*send, junk);  // may fail once the stream has ended
          while (true) {
            absl::StatusOr<ClientEvent> end = Next(*client);
            if (!end.ok()) return end.status();
            if (end->kind == Kind::kEnded) {
              return Expect(absl::IsInvalidArgument(end->status),
                            "an undecodable payload got: ", end->status.ToString());
            }
          }
        }
        case Misbehavior::kLatePayload: {
          absl::SleepFor(kStepDeadline + absl::Milliseconds(150));
          DEMOD_RETURN_IF_ERROR(client->SendPayload(*send, Payload(*send, random)));
          while (true) {
            absl::StatusOr<ClientEvent> told = Next(*client);
            if (!told.ok()) return told.status();
            if (told->kind == Kind::kNotIncluded &&
                std::find(told->steps.begin(), told->steps.end(), *send) != told->steps.end()) {
              return absl::OkStatus();
            }
            // A machine too loaded to close the step at its deadline may still take the payload.
            if (told->kind == Kind::kAggregate && told->step == *send) {
              absl::StatusOr<StepAggregate> aggregate = DecodeStepAggregate(told->bytes, layouts_);
              if (aggregate.ok() &&
                  std::count(aggregate->contributors.begin(), aggregate->contributors.end(),
                             client->worker_id()) == 1) {
                return absl::OkStatus();
              }
            }
            if (told->kind == Kind::kEnded || told->kind == Kind::kEvicted) {
              return absl::InternalError(absl::StrCat("a late payload for step ", *send, " got '",
                                                      ClientEventKindName(told->kind), "' ",
                                                      told->status.ToString()));
            }
          }
        }
        default:
          // Donors that leave when asked are rarely asked: they too leave after their quota.
          if (contributed == quota) return absl::OkStatus();
          DEMOD_RETURN_IF_ERROR(client->SendPayload(*send, Payload(*send, random)));
          ++contributed;
      }
    }
    return absl::OkStatus();  // leaving: the client's destructor closes the stream
  }

  const std::string& parameters() const { return parameters_; }

 private:
  template <typename... Parts>
  static absl::Status Expect(bool condition, const Parts&... parts) {
    return condition ? absl::OkStatus() : absl::InternalError(absl::StrCat(parts...));
  }

  const std::string target_;
  const LayoutTable layouts_;
  std::string parameters_;
};

// A worker that behaves throughout, recording every aggregate it receives.
struct SteadyWorker {
  std::unique_ptr<CoordinatorClient> client;
  std::map<int64_t, std::string> aggregates;
  absl::Status failure;

  void Run(const FaultRun& run, const std::atomic<bool>& stop, uint64_t seed) {
    std::mt19937_64 random(seed);
    FaultRun::Honest state;
    while (!stop.load()) {
      absl::StatusOr<ClientEvent> event = client->Next(absl::Milliseconds(100));
      if (absl::IsDeadlineExceeded(event.status())) continue;
      if (!event.ok()) {
        failure = event.status();
        return;
      }
      if (event->kind == Kind::kAggregate) aggregates[event->step] = event->bytes;
      absl::StatusOr<std::optional<int64_t>> send = run.Answer(*client, state, *event);
      if (send.ok() && send->has_value()) {
        send = client->SendPayload(**send, run.Payload(**send, random)).ok()
                   ? send
                   : absl::InternalError("could not send a payload");
      }
      if (!send.ok()) {
        failure = send.status();
        return;
      }
    }
  }
};

TEST(CoordinatorFaultTest, TheRunGoesOnThroughMisbehavingWorkers) {
  const uint64_t seed = static_cast<uint64_t>(EnvOr("DEMOD_FAULT_SEED", std::random_device()()));
  const absl::Duration chaos = absl::Seconds(EnvOr("DEMOD_FAULT_SECONDS", 20));
  std::printf("DEMOD_FAULT_SEED=%llu\n", static_cast<unsigned long long>(seed));
  RecordProperty("seed", std::to_string(seed));

  CoordinatorServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "";
  options.config = FaultConfig();
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
      CoordinatorServer::Start(std::move(options));
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<TensorShape> shapes;
  for (const auto& [name, shape] : kShapes) shapes.push_back({name, shape});
  const FaultRun run(absl::StrCat("127.0.0.1:", (*server)->port()),
                     *MakeLayoutTable(shapes, FaultConfig().optimizer.compression_chunk,
                                      FaultConfig().optimizer.compression_topk));

  std::atomic<bool> stop_steady{false};
  std::atomic<bool> stop_chaos{false};
  SteadyWorker steady[2];
  std::vector<std::thread> steady_threads;
  std::vector<std::thread> chaos_threads;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
        CoordinatorClient::Connect(run.Options(absl::StrCat("steady-", i)));
    ASSERT_TRUE(client.ok()) << client.status();
    steady[i].client = *std::move(client);
    steady_threads.emplace_back([&, i] { steady[i].Run(run, stop_steady, seed + i); });
  }

  // Three chaotic workers take the misbehaviours in turn, so each is tried several times.
  absl::Mutex mu;
  std::vector<std::string> failures;
  int lives[kMisbehaviors] = {};
  constexpr int kChaotic = 3;
  for (int i = 0; i < kChaotic; ++i) {
    chaos_threads.emplace_back([&, i] {
      std::mt19937_64 random(seed * 1000003 + 7 + i);
      for (int life = 0; !stop_chaos.load(); ++life) {
        const auto m = static_cast<Misbehavior>((i + kChaotic * life) % kMisbehaviors);
        const std::string name = absl::StrCat("chaos-", i, "-", life);
        absl::Status status = run.Live(m, name, random, stop_chaos);
        absl::MutexLock lock(&mu);
        ++lives[static_cast<int>(m)];
        if (!status.ok())
          failures.push_back(absl::StrCat(name, " (", Name(m), "): ", status.ToString()));
      }
    });
  }
  absl::SleepFor(chaos);
  stop_chaos.store(true);
  for (std::thread& t : chaos_threads) t.join();
  // Every chaotic worker is gone: only the steady ones are members.
  const absl::Time give_up = absl::Now() + kPatience;
  while ((*server)->run().Status().members_size() != 2 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ((*server)->run().Status().members_size(), 2);
  stop_steady.store(true);
  for (std::thread& t : steady_threads) t.join();

  EXPECT_TRUE(failures.empty()) << absl::StrJoin(failures, "\n");
  for (int m = 0; m < kMisbehaviors; ++m) {
    EXPECT_GT(lives[m], 0) << Name(static_cast<Misbehavior>(m)) << " was never tried";
    std::printf("%s: %d lives\n", Name(static_cast<Misbehavior>(m)), lives[m]);
  }
  for (const SteadyWorker& w : steady) EXPECT_OK(w.failure);
  // Progress, and one aggregate per step whoever received it.
  int common = 0;
  for (const auto& [step, bytes] : steady[0].aggregates) {
    auto other = steady[1].aggregates.find(step);
    if (other == steady[1].aggregates.end()) continue;
    ++common;
    EXPECT_EQ(other->second, bytes) << "step " << step;
  }
  std::printf("steps both steady workers received: %d\n", common);
  EXPECT_GE(common, 10);
}

}  // namespace
}  // namespace demod
