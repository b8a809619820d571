// The coordinator's membership and step sequencing as a pure state machine: events in
// (join, state transferred, payload arrived, heartbeat, leave, tick), actions out (welcome,
// request a state transfer, open a step, close a step, reject a late payload, evict, pause,
// finish). No threads, no clock reads, no I/O: time is an argument, so every rule is tested
// directly (tests/server/step_machine_test.cc). The gRPC server is a thin shell that feeds it
// events and carries out its actions, in order.
//
// Rules:
// - The first worker of a run (or the first after every member left) is its seed: its
//   parameters are the run's and it becomes active at once. Once a step has completed, the seed
//   must not roll the run back:
//   - a worker whose parameters include no step (resume step 0) is refused (UNAVAILABLE, so it
//     retries) until a member holds the run's parameters;
//   - a worker whose parameters are behind the run's completed steps (a stale one) is refused
//     the same way for stale_seed_grace from the first such refusal, so that a more current
//     worker may come back first; after it, the most current of the stale workers that asked
//     within heartbeat_timeout is taken (the coordinator reports the steps undone).
//   Every later worker first receives the parameters from an active donor (donors taken in
//   turn, so joiners do not all pull from one), then becomes active at the next step boundary.
//   A donor that leaves mid-transfer is replaced; so is one whose transfer makes no progress for
//   heartbeat_timeout while another member could donate (with none, the joiner keeps waiting
//   for it). A joiner whose last possible donor leaves becomes the seed if it could have joined
//   as one; if not, it is evicted, to join again under the rules above.
// - A step opens when no step is open and at least min_workers are active; it expects a
//   payload from every active member.
// - A step closes when every expected member still present has sent, or at its deadline:
//   fixed, or adaptive (median + k * MAD of recent complete steps' durations, within
//   [floor, ceiling]; the ceiling until 3 durations are known).
// - A payload for a step that already closed is rejected (the sender keeps it in momentum).
// - A member that misses max_missed_steps steps in a row and has sent no payload for
//   heartbeat_timeout, or sends nothing at all for heartbeat_timeout, is evicted; one that
//   leaves is removed at once. A late payload is not silence: it clears the missed steps in a
//   row. So a worker slower than the deadline, which sends a late payload now and then and skips
//   the steps that closed meanwhile, stays a member (its contributions kept in its momentum)
//   instead of being evicted and sent the whole parameters again and again; whether it can keep
//   up with the aggregates at all is the outbound queue's bound.
// - With fewer than min_workers active the run pauses at the next boundary and resumes when
//   workers return. After total_steps the run finishes.
// - A coordinator resuming from saved state may have stopped between a step's save and its
//   delivery, either way round: a step's save completes while the next step runs, and a step's
//   aggregate is sent once its save is submitted. The first worker to join after the resume is
//   the seed: if its parameters are exactly one step ahead of the saved count or one step
//   behind it (and include at least one step), the run's count becomes the seed's.
//
// Thread-compatible: the server calls it from one thread (or under one lock).
#ifndef DEMOD_SERVER_STEP_MACHINE_H_
#define DEMOD_SERVER_STEP_MACHINE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/run_config.h"

namespace demod {

using WorkerId = uint32_t;

struct Action {
  enum class Kind {
    kWelcome,       // worker: admitted as active; step: the first step it contributes to
    kRequestState,  // worker: joiner; donor: who streams it the parameters
    kOpenStep,      // step; workers: who is expected to contribute
    kCloseStep,     // step; workers: contributors (ascending); aggregate and fan out
    kRejectLate,    // worker; step: its payload for a closed step is not included
    kEvict,         // worker
    kPause,         // fewer than min_workers active
    kFinish,        // total_steps done
    kLast = kFinish,
  };
  Kind kind;
  WorkerId worker = 0;
  WorkerId donor = 0;
  int64_t step = 0;
  std::vector<WorkerId> workers;
  std::string reason;  // why, for logs and status
  enum class EvictCause {
    kMissedSteps,  // max_missed_steps in a row without a payload
    kSilent,       // no message for heartbeat_timeout
    kNoDonor,      // a joiner whose donors all left, with parameters unfit to seed the run
  };
  EvictCause evict_cause = EvictCause::kMissedSteps;  // kEvict

  friend bool operator==(const Action& a, const Action& b);
};
std::string ActionToString(const Action& action);

struct MemberView {
  WorkerId id;
  std::string name;
  bool active;  // false while it receives the parameters or waits for a boundary
  absl::Time last_seen;
  int missed_in_a_row;
  int64_t contributions_missed;
};

class StepMachine {
 public:
  // `completed_steps`: steps already done. `resumed`: they were read from a save (a
  // coordinator restarting from its state directory), which may be one step behind the workers.
  StepMachine(const RunConfig& config, int64_t completed_steps = 0, bool resumed = false);

  struct Joined {
    WorkerId id;
    std::vector<Action> actions;
  };
  // `resume_step`: the last step the worker's parameters include (0 for none). RESOURCE_EXHAUSTED
  // at max_workers, ALREADY_EXISTS for a name in use, OUT_OF_RANGE once the run has finished,
  // UNAVAILABLE for a would-be seed with no step or, during the grace, a stale one (see the
  // rules above).
  absl::StatusOr<Joined> Join(const std::string& name, absl::Time now, int64_t resume_step = 0);
  // A frame of the joiner's parameters went on to it: its transfer is moving.
  void StateProgress(WorkerId joiner, absl::Time now);
  // The joiner has the run's parameters. NOT_FOUND for an unknown worker,
  // FAILED_PRECONDITION when it was not waiting for them.
  absl::StatusOr<std::vector<Action>> StateTransferred(WorkerId worker, absl::Time now);
  // INVALID_ARGUMENT for a step that has not opened, ALREADY_EXISTS for a second payload,
  // FAILED_PRECONDITION when the worker is not active or was not expected.
  absl::StatusOr<std::vector<Action>> Payload(WorkerId worker, int64_t step, absl::Time now);
  absl::StatusOr<std::vector<Action>> Heartbeat(WorkerId worker, absl::Time now);
  // The worker's parameters diverged from the run's (a fingerprint mismatch): it stops
  // contributing after the open step and receives the parameters again, from a donor outside
  // `suspects` (the workers whose parameters are in doubt). NOT_FOUND for an unknown worker,
  // FAILED_PRECONDITION when it is already receiving them or no other member can donate.
  absl::StatusOr<std::vector<Action>> Resync(WorkerId worker, const std::vector<WorkerId>& suspects,
                                             absl::Time now);
  std::vector<Action> Leave(WorkerId worker, absl::Time now, const std::string& reason);
  std::vector<Action> Tick(absl::Time now);

  int64_t completed_steps() const { return completed_steps_; }
  std::optional<int64_t> open_step() const;
  // When Tick must be called next (the open step's deadline), if anything is pending.
  std::optional<absl::Time> deadline() const;
  bool paused() const { return paused_; }
  bool finished() const { return finished_; }
  std::vector<MemberView> members() const;
  int active_count() const;  // members contributing from the current boundary on
  // The deadline a step opened now would get.
  absl::Duration StepBudget() const;

 private:
  struct Member {
    std::string name;
    enum class State { kSyncing, kReady, kActive } state;
    int64_t resume_step = 0;  // the step its own parameters were at when it joined
    WorkerId donor = 0;
    absl::Time transfer_moved;  // kSyncing: when its donor was asked, or its last frame
    absl::Time last_seen;
    absl::Time last_payload;  // on time or late; kActive: at least when it became active
    int missed_in_a_row = 0;
    int64_t contributions_missed = 0;
  };
  struct OpenStep {
    int64_t step;
    absl::Time opened;
    absl::Time deadline;
    std::vector<WorkerId> expected;
    std::vector<WorkerId> received;
  };

  // OK when a worker whose parameters are of `resume_step` may become the seed now; else the
  // UNAVAILABLE that keeps it waiting (and notes its offer, for the grace's choice).
  absl::Status MaySeed(const std::string& name, int64_t resume_step, absl::Time now);
  // Parameters of `resume_step` would not roll the run back.
  bool Current(int64_t resume_step) const;
  // Members holding the run's parameters, outside `excluded`.
  std::vector<WorkerId> Holders(const std::vector<WorkerId>& excluded) const;
  std::optional<WorkerId> NextDonor(const std::vector<WorkerId>& excluded = {});
  void AssignDonor(WorkerId joiner, absl::Time now, std::vector<Action>& out,
                   const std::vector<WorkerId>& excluded = {});
  void Remove(WorkerId worker, absl::Time now, std::vector<Action>& out);
  // Joiners whose transfer has not moved for heartbeat_timeout get another donor.
  void ReplaceStalledDonors(absl::Time now, std::vector<Action>& out);
  void MaybeCloseComplete(absl::Time now, std::vector<Action>& out);
  void CloseStep(absl::Time now, const std::string& reason, std::vector<Action>& out);
  void AtBoundary(absl::Time now, std::vector<Action>& out);

  RunConfig config_;
  int64_t completed_steps_;
  bool resumed_;
  WorkerId next_id_ = 1;
  std::map<WorkerId, Member> members_;
  std::optional<OpenStep> open_;
  std::vector<absl::Duration> recent_durations_;
  size_t donor_turn_ = 0;
  bool paused_ = false;
  bool finished_ = false;
  // While no member holds the run's parameters: stale would-be seeds that asked (by name), and
  // since when the first of them waits.
  struct StaleOffer {
    int64_t resume_step;
    absl::Time asked;
  };
  std::map<std::string, StaleOffer> stale_offers_;
  std::optional<absl::Time> stale_wait_started_;
};

}  // namespace demod

#endif  // DEMOD_SERVER_STEP_MACHINE_H_
