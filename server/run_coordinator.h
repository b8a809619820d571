// The coordinator of one training run, between the gRPC shell and the pure StepMachine: it
// validates what workers send, feeds the machine events and carries out its actions.
//
// - Join: checks the protocol version, the worker's name and run id, and its tensor table
//   (the first table becomes the run's); answers Welcome, then ACTIVE or a parameter relay.
// - Payload frames are reassembled per worker, decoded and checked against the run's layout
//   table; when a step closes its contributors' payloads are aggregated once, encoded once
//   and the same frames are queued to every member (members still receiving parameters
//   too, so they can catch up). StepRecord sums the step up for the metrics and the log.
// - Parameters for a joiner are relayed frame by frame from the donor the machine picks, each
//   frame judged by ParameterRelay and sent on as the bytes received; if the donor leaves or
//   stalls, the machine picks another and the transfer restarts at offset 0.
// - Fingerprints reported for a step are compared across workers (FingerprintRound); a
//   minority is resynced from the majority.
// - At every step boundary the run's state is saved to the RunStore, on a thread of its own
//   (RunStateSaver): a step's aggregate waits only for the save of the step before, so the
//   saved state is never more than one step from the workers' (while saves succeed), and a
//   restarted coordinator takes the seed's step when it is (StepMachine::Join).
// Anything malformed ends only its sender's stream with INVALID_ARGUMENT and the reason.
//
// Thread-safe: every entry point takes one mutex, and starts the writes it queued only after
// releasing it (a step's fan-out spread over a few threads). Time is an argument; the shell
// reads clocks.
#ifndef DEMOD_SERVER_RUN_COORDINATOR_H_
#define DEMOD_SERVER_RUN_COORDINATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/frame_assembler.h"
#include "common/run_config.h"
#include "common/sparse_payload.h"
#include "demod/v1/coordinator.pb.h"
#include "server/batch_balancer.h"
#include "server/coordinator_metrics.h"
#include "server/fingerprint_round.h"
#include "server/member_channel.h"
#include "server/outbound_message.h"
#include "server/parameter_relay.h"
#include "server/run_state_saver.h"
#include "server/run_store.h"
#include "server/state_frame_header.h"
#include "server/step_machine.h"
#include "server/step_record.h"

namespace demod {

class RunCoordinator {
 public:
  struct Options {
    RunConfig config;
    // When set, the run resumes from the state saved there (its config wins; a different
    // run id in `config` is an error) and saves its state at every step boundary.
    std::optional<RunStore> store;
    CoordinatorMetrics* metrics = nullptr;  // required; not owned
  };
  // FAILED_PRECONDITION when the store holds another run; the store's errors otherwise.
  static absl::StatusOr<std::unique_ptr<RunCoordinator>> Create(Options options);

  // A stream's first message. On success the worker is a member, Welcome is queued on
  // `channel` and its id returned; on error the caller ends the stream with the status.
  absl::StatusOr<WorkerId> Join(const v1::Join& join, std::shared_ptr<MemberChannel> channel,
                                absl::Time now);
  // Every later message of a member's stream (taken, so that frame data moves rather than
  // copies). A message that breaks the protocol ends that stream (through its channel) and
  // removes the member.
  void Handle(WorkerId worker, v1::WorkerMessage message, absl::Time now);
  // A state frame read from the wire without parsing its data (server/state_frame_header.h):
  // `relay` is the received message itself, written on to the joiner if the frame is valid.
  // Otherwise as Handle.
  void HandleStateFrame(WorkerId donor, const StateFrameHeader& header,
                        std::shared_ptr<const OutboundMessage> relay, absl::Time now);
  // A message of the member's stream could not even be parsed: ends that stream with `status`
  // and removes the member, as for any other invalid message.
  void Malformed(WorkerId worker, const absl::Status& status, absl::Time now);
  // The member's stream ended (the worker left or the connection broke).
  void Disconnected(WorkerId worker, absl::Time now);
  // Deadlines and heartbeat timeouts.
  void Tick(absl::Time now);
  // When Tick is due next (an open step's deadline), if anything is pending.
  std::optional<absl::Time> NextDeadline() const;
  // Tells every member the coordinator is going away and ends their streams; returns once the
  // run's state is saved.
  void Shutdown(absl::Time now);

  v1::RunStatus Status() const;
  const RunConfig& config() const { return config_; }
  bool finished() const;
  // Finished, and every member's stream has ended: a member's stream ends when it reports the
  // last step (its report and fingerprint are the run's last news, not to be cut off) or
  // kFinishGrace after the finish, whichever comes first.
  bool drained() const;
  static constexpr absl::Duration kFinishGrace = absl::Seconds(5);

 private:
  struct Member {
    std::string name;
    v1::Hardware hardware;
    std::shared_ptr<MemberChannel> channel;
    FrameAssembler payload_frames;
    uint32_t payload_samples = 0;  // what the first frame of the payload being assembled said
    uint64_t bytes_received = 0;
    uint64_t bytes_sent = 0;
    // Set once the run finished: the stream ends by then at the latest.
    std::optional<absl::Time> end_by = std::nullopt;
    int64_t batch_share_sent = 0;  // batch balancing: the share it was last told (0: none)
  };
  // A decoded payload and its size on the wire.
  struct TakenPayload {
    StepPayload payload;
    uint64_t bytes = 0;
    uint32_t samples = 0;  // behind it, as its frames said
  };

  // A payload whose last frame arrived, to be decoded outside the lock.
  struct CompletePayload {
    int64_t step = 0;
    uint32_t samples = 0;
    std::string bytes;
    std::shared_ptr<const LayoutTable> layouts;
  };

  RunCoordinator(Options options, int64_t completed_steps, bool resumed);

  // Join without the flush.
  absl::StatusOr<WorkerId> Admit(const v1::Join& join, std::shared_ptr<MemberChannel> channel,
                                 absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Returns the status that ends the worker's stream, or OK; fills `complete` when a
  // payload's last frame arrived.
  absl::Status HandleLocked(WorkerId worker, v1::WorkerMessage& message, absl::Time now,
                            CompletePayload* complete) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts a message of `bytes` from the member, which shows it is alive.
  absl::Status Received(WorkerId worker, uint64_t bytes, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status OnPayloadFrame(WorkerId worker, v1::PayloadFrame& frame, CompletePayload* complete)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status OnPayload(WorkerId worker, StepPayload payload, uint64_t bytes, uint32_t samples,
                         absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `relay`: the frame as a CoordinatorMessage, queued to the joiner when the frame is valid.
  absl::Status OnStateFrame(WorkerId donor, const StateFrameHeader& frame,
                            std::shared_ptr<const OutboundMessage> relay, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status OnFingerprint(WorkerId worker, const v1::Fingerprint& fingerprint, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AdoptTensorTable(const v1::Join& join) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Carries out the machine's actions in order (some produce more, which follow).
  void Apply(std::vector<Action> actions, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpenStep(const Action& open, absl::Time now, std::vector<Action>& more)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Batch balancing: tells each active member its share of the global batch when it changed.
  void SendBatchShares() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The members contributing from the current boundary on (present here too: one expelled
  // since the machine listed it has no share).
  std::vector<WorkerId> ActiveMembers() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseStep(const Action& close, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Metrics and the log line of a step that closed.
  void RecordClosedStep(const StepSummary& summary) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts a parameter transfer: asks the donor for the first window.
  void RequestState(const Action& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendStateRequest(const ParameterRelay::Request& request, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the joiner's donor for the next window if the joiner has room for it, or has the
  // joiner's stream call JoinerDrained once it has.
  void RequestMoreState(WorkerId joiner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void JoinerDrained(WorkerId joiner) ABSL_LOCKS_EXCLUDED(mu_);
  // The joiner's stream has written the last frame of its parameters (NotifyWhenDelivered).
  void JoinerHoldsParameters(WorkerId joiner) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the transfer to `joiner`, if one is under way, and tells its donor.
  void EndTransfer(WorkerId joiner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the member's stream with `status` and removes it from the run. A slow consumer's
  // stream is aborted: what is queued for it is dropped, not delivered.
  void Expel(WorkerId worker, const absl::Status& status, LeaveReason metric_reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The most bytes a member may leave unread: two windows of a parameter transfer and
  // config_.outbound_queue_steps of the largest aggregate so far.
  uint64_t OutboundQueueBound() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Expels, with RESOURCE_EXHAUSTED, every member whose queue is past OutboundQueueBound.
  void EvictSlowConsumers(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(WorkerId worker, const std::string& event, const std::string& reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendTo(WorkerId worker, std::shared_ptr<const OutboundMessage> message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `messages`, in order, to every member.
  void SendToAll(const std::vector<std::shared_ptr<const OutboundMessage>>& messages)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndStream(Member& member, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After the run finished: ends the member's stream, once (end_by says it is still open).
  void EndFinishedStream(Member& member) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the writes queued under the lock; every entry point that may queue calls it last.
  void FlushChannels() ABSL_LOCKS_EXCLUDED(mu_);
  void SendControl(WorkerId worker, v1::Control control) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Broadcast(const v1::Control& control) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Record(const std::string& worker, const std::string& event, const std::string& reason,
              absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Save() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ShutdownLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RunConfig config_;
  std::unique_ptr<RunStateSaver> saver_;  // null without a store
  CoordinatorMetrics* const metrics_;

  mutable absl::Mutex mu_;
  StepMachine machine_ ABSL_GUARDED_BY(mu_);
  PersistedRun persisted_ ABSL_GUARDED_BY(mu_);  // tensors and history as last saved or since
  // Null until the first join; immutable once set, so decoders may hold it without the lock.
  std::shared_ptr<const LayoutTable> layouts_ ABSL_GUARDED_BY(mu_);
  uint64_t max_payload_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t max_state_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t largest_aggregate_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<WorkerId, Member> members_ ABSL_GUARDED_BY(mu_);
  ParameterRelay relay_ ABSL_GUARDED_BY(mu_);
  // Joiners sent every byte of their parameters, until their stream has written them: what
  // was still queued for each at the last tick.
  std::map<WorkerId, uint64_t> awaiting_delivery_ ABSL_GUARDED_BY(mu_);
  FingerprintRound fingerprints_ ABSL_GUARDED_BY(mu_);
  std::optional<BatchBalancer> balancer_ ABSL_GUARDED_BY(mu_);  // with config_.batch.balance
  std::optional<StepRecord> step_ ABSL_GUARDED_BY(mu_);         // the open step
  // Decoded payloads of the open step, and payloads for the next step that arrived while
  // the run was paused (they wait for it to open).
  std::map<WorkerId, TakenPayload> payloads_ ABSL_GUARDED_BY(mu_);
  std::map<WorkerId, TakenPayload> early_payloads_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Channels with messages or an end queued since the last FlushChannels.
  std::vector<std::shared_ptr<MemberChannel>> unflushed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace demod

#endif  // DEMOD_SERVER_RUN_COORDINATOR_H_
