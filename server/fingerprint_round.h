// The fingerprint vote, one step at a time. Every fingerprint_interval steps each active
// worker reports a hash of its parameters (proto Fingerprint); once every member that was
// active for the whole of that step has reported it, and at least two did, the round is
// decided by VoteOnFingerprints (server/fingerprint_vote.h): its divergent workers get fresh
// parameters.
//
// - Eligible to vote on step s: a member activated at or before s, and not deactivated since
//   (a worker receiving parameters, or activated later, has nothing comparable to report).
//   Reports from others are ignored.
// - The round is the newest step reported: a report of a newer step starts a new round (the
//   old one's reports are dropped), a report of an older one is ignored.
// - A decided round starts empty again.
//
// Pure logic with no I/O; thread-compatible (RunCoordinator calls it under its lock).
#ifndef DEMOD_SERVER_FINGERPRINT_ROUND_H_
#define DEMOD_SERVER_FINGERPRINT_ROUND_H_

#include <cstdint>
#include <map>
#include <optional>

#include "server/fingerprint_vote.h"
#include "server/step_machine.h"

namespace demod {

class FingerprintRound {
 public:
  // `worker` contributes from `first_step` on, and votes on that step's fingerprints and later.
  void Activated(WorkerId worker, int64_t first_step);
  // `worker` no longer votes: it left, or its parameters are being replaced.
  void Deactivated(WorkerId worker);

  // `worker` reported `hash` for `step` (a step the run has completed). The verdict once this
  // report completes the round; nullopt while reports are missing or when it is ignored.
  std::optional<FingerprintVerdict> Report(WorkerId worker, int64_t step, uint64_t hash);

  // The step of the round under way (the newest reported), 0 before any report.
  int64_t step() const { return step_; }

 private:
  std::map<WorkerId, int64_t> first_steps_;  // eligible members and their first step
  int64_t step_ = 0;
  std::map<WorkerId, uint64_t> reports_;
};

}  // namespace demod

#endif  // DEMOD_SERVER_FINGERPRINT_ROUND_H_
