#include "server/fingerprint_round.h"

namespace demod {

void FingerprintRound::Activated(WorkerId worker, int64_t first_step) {
  first_steps_[worker] = first_step;
}

void FingerprintRound::Deactivated(WorkerId worker) {
  first_steps_.erase(worker);
  reports_.erase(worker);
}

std::optional<FingerprintVerdict> FingerprintRound::Report(WorkerId worker, int64_t step,
                                                           uint64_t hash) {
  auto first = first_steps_.find(worker);
  if (first == first_steps_.end() || first->second > step) return std::nullopt;
  if (step < step_) return std::nullopt;  // superseded
  if (step > step_) {
    step_ = step;
    reports_.clear();
  }
  reports_[worker] = hash;
  for (const auto& [id, first_step] : first_steps_) {
    if (first_step <= step_ && reports_.count(id) == 0) return std::nullopt;
  }
  if (reports_.size() < 2) return std::nullopt;
  FingerprintVerdict verdict = VoteOnFingerprints(reports_);
  reports_.clear();
  return verdict;
}

}  // namespace demod
