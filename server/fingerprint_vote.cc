#include "server/fingerprint_vote.h"

namespace demod {

FingerprintVerdict VoteOnFingerprints(const std::map<WorkerId, uint64_t>& reports) {
  std::map<uint64_t, int> votes;
  for (const auto& [worker, hash] : reports) ++votes[hash];
  FingerprintVerdict verdict;
  int best = 0;
  // Workers ascend, so the first hash to reach the top count is the lowest id's among ties.
  for (const auto& [worker, hash] : reports) {
    if (votes[hash] > best) {
      best = votes[hash];
      verdict.majority_hash = hash;
    }
  }
  for (const auto& [worker, hash] : reports) {
    (hash == verdict.majority_hash ? verdict.agreeing : verdict.divergent).push_back(worker);
  }
  return verdict;
}

}  // namespace demod
