// Which workers' parameters diverged, decided from the fingerprints (hashes of the parameter
// bytes) they reported for one step. The hash most workers reported is the run's; a tie goes
// to the hash of the longest-standing member (the lowest worker id), which has applied the
// most aggregates under the coordinator's eye. Everyone else is divergent.
//
// Pure function; thread-safe.
#ifndef DEMOD_SERVER_FINGERPRINT_VOTE_H_
#define DEMOD_SERVER_FINGERPRINT_VOTE_H_

#include <cstdint>
#include <map>
#include <vector>

#include "server/step_machine.h"

namespace demod {

struct FingerprintVerdict {
  uint64_t majority_hash = 0;
  std::vector<WorkerId> agreeing;   // ascending
  std::vector<WorkerId> divergent;  // ascending; empty when all agree
};

// `reports` must not be empty.
FingerprintVerdict VoteOnFingerprints(const std::map<WorkerId, uint64_t>& reports);

}  // namespace demod

#endif  // DEMOD_SERVER_FINGERPRINT_VOTE_H_
