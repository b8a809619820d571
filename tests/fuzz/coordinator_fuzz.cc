// The coordinator's handling of what workers send, in process (no network): two workers join,
// then the input drives a sequence of events: arbitrary bytes as a worker's message (parsed as
// the service parses them, or refused as malformed), real payloads for the open step, a
// donor's parameters for a joiner, leaves and rejoins, and time passing. Whatever the order,
// the coordinator must neither crash nor trip a sanitizer, and its status must stay readable.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/frame_assembler.h"
#include "common/logging.h"
#include "common/payload_codec.h"
#include "server/coordinator_metrics.h"
#include "server/member_channel.h"
#include "server/run_coordinator.h"
#include "tests/fuzz/fuzz_tables.h"
#include "tests/support/synthetic_payload.h"

namespace demod {
namespace {

// A stream's sending half that keeps nothing: the coordinator's decisions do not depend on
// delivery, only on what it queues and ends.
class DiscardingChannel final : public MemberChannel {
 public:
  void Send(std::shared_ptr<const OutboundMessage>) override {}
  void End(const absl::Status&) override {}
  void Flush() override {}
  uint64_t queued_bytes() const override { return 0; }
  bool NotifyWhenQueuedAtMost(uint64_t, std::function<void()>) override { return false; }
  bool NotifyWhenDelivered(std::function<void()>) override { return false; }
  void Abort(const absl::Status&) override {}
};

v1::Join JoinOf(const std::string& name) {
  v1::Join join;
  join.set_protocol_version(v1::PROTOCOL_VERSION);
  join.set_worker_name(name);
  join.mutable_hardware()->set_device_kind(v1::DEVICE_KIND_CPU);
  *join.mutable_tensors() = TensorSpecsOf(FuzzShapes());
  return join;
}

void Run(FuzzedDataProvider& input) {
  static CoordinatorMetrics* metrics = new CoordinatorMetrics("fuzz");
  RunCoordinator::Options options;
  options.config = FuzzRunConfig();
  options.metrics = metrics;
  std::unique_ptr<RunCoordinator> run = *RunCoordinator::Create(std::move(options));
  absl::Time now = absl::UnixEpoch() + absl::Hours(1);
  std::vector<std::optional<WorkerId>> workers(2);
  const auto join = [&](size_t k) {
    absl::StatusOr<WorkerId> id =
        run->Join(JoinOf(k == 0 ? "a" : "b"), std::make_shared<DiscardingChannel>(), now);
    workers[k] = id.ok() ? std::optional<WorkerId>(*id) : std::nullopt;
  };
  join(0);
  join(1);
  std::mt19937_64 random(input.ConsumeIntegral<uint64_t>());
  while (input.remaining_bytes() > 0) {
    const size_t k = input.ConsumeIntegralInRange<size_t>(0, 1);
    const int op = input.ConsumeIntegralInRange<int>(0, 5);
    if (!workers[k].has_value() && op != 4) continue;
    switch (op) {
      case 0: {  // bytes on the wire, parsed as the service parses them
        const std::string bytes = input.ConsumeRandomLengthString(6000);
        v1::WorkerMessage message;
        if (message.ParseFromString(bytes)) {
          run->Handle(*workers[k], std::move(message), now);
        } else {
          run->Malformed(*workers[k], absl::InvalidArgumentError("malformed message"), now);
          workers[k].reset();
        }
        break;
      }
      case 1: {  // a real payload for the step after the last completed one, in frames
        const int64_t step = run->Status().completed_steps() + 1;
        const std::string payload = *EncodeStepPayload(
            SyntheticPayload(FuzzLayouts(), step, ValueEncoding::kFloat32, random), FuzzLayouts());
        for (const Frame& f : SplitIntoFrames(payload, FuzzRunConfig().max_frame_bytes)) {
          v1::WorkerMessage message;
          message.mutable_payload()->set_step(step);
          message.mutable_payload()->set_total_bytes(payload.size());
          message.mutable_payload()->set_offset(f.offset);
          message.mutable_payload()->set_data(std::string(f.data));
          run->Handle(*workers[k], std::move(message), now);
        }
        break;
      }
      case 2: {  // parameters from this worker for the other, as a donor sends them
        const size_t other = 1 - k;
        if (!workers[other].has_value()) break;
        v1::WorkerMessage message;
        v1::StateFrame& state = *message.mutable_state();
        state.set_joiner_id(*workers[other]);
        state.set_step(run->Status().completed_steps());
        const std::string data = input.ConsumeRandomLengthString(3000);
        state.set_total_bytes(input.ConsumeBool() ? data.size()
                                                  : input.ConsumeIntegral<uint16_t>());
        state.set_offset(input.ConsumeBool() ? 0 : input.ConsumeIntegral<uint16_t>());
        state.set_data(data);
        run->Handle(*workers[k], std::move(message), now);
        break;
      }
      case 3:  // the worker's stream ends
        run->Disconnected(*workers[k], now);
        workers[k].reset();
        break;
      case 4:  // it joins again
        if (!workers[k].has_value()) join(k);
        break;
      case 5:  // time passes: deadlines and heartbeat timeouts
        now += absl::Milliseconds(input.ConsumeIntegralInRange<int>(0, 60000));
        run->Tick(now);
        break;
    }
    const v1::RunStatus status = run->Status();
    if (status.members_size() > 2 || status.completed_steps() < 0) __builtin_trap();
  }
  run->Shutdown(now);
}

}  // namespace
}  // namespace demod

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  demod::SetLogLevel(demod::LogLevel::kError);  // a line per join and step would drown it
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  demod::Run(input);
  return 0;
}
