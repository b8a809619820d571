// What the coordinator notes about one step, from its opening to its close: who was expected
// and when payloads arrived. At the close it sums the step up (StepSummary) for the metrics and
// the step's log line.
//
// The barrier wait is what the fastest worker waited for the slowest: from the first payload
// to the close (the last payload's arrival, or the deadline when someone did not send).
//
// Pure; thread-compatible.
#ifndef DEMOD_SERVER_STEP_RECORD_H_
#define DEMOD_SERVER_STEP_RECORD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/step_machine.h"

namespace demod {

struct StepSummary {
  int64_t step = 0;
  absl::Duration duration;             // opening to close
  absl::Duration barrier_wait;         // first payload to close; zero without payloads
  std::vector<WorkerId> contributors;  // ascending
  std::vector<WorkerId> missing;       // expected, but not among the contributors; ascending
  size_t expected = 0;
  uint64_t bytes_in = 0;   // the contributors' encoded payloads
  uint64_t bytes_out = 0;  // the aggregate, once per member it went to
  std::string reason;      // why it closed (StepMachine's words)

  // "step 12 closed in 3.2ms: contributors [1,2,3] of 3, 600 bytes in, 900 bytes out (all
  // expected payloads arrived)"
  std::string LogLine() const;
};

class StepRecord {
 public:
  // `expected`: ascending, as StepMachine's kOpenStep lists them.
  StepRecord(int64_t step, absl::Time opened, std::vector<WorkerId> expected);

  int64_t step() const { return step_; }
  // A payload of the step was taken at `now`.
  void PayloadTaken(absl::Time now);
  // When the last payload so far was taken; nullopt before the first.
  std::optional<absl::Time> last_payload() const { return last_payload_; }

  // `contributors`: ascending.
  StepSummary Close(absl::Time now, std::vector<WorkerId> contributors, uint64_t bytes_in,
                    uint64_t bytes_out, std::string reason) const;

 private:
  int64_t step_;
  absl::Time opened_;
  std::vector<WorkerId> expected_;
  std::optional<absl::Time> first_payload_;
  std::optional<absl::Time> last_payload_;
};

}  // namespace demod

#endif  // DEMOD_SERVER_STEP_RECORD_H_
