#include "server/step_record.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace demod {

std::string StepSummary::LogLine() const {
  return absl::StrCat("step ", step, " closed in ",
                      absl::FormatDuration(absl::Trunc(duration, absl::Microseconds(100))),
                      ": contributors [", absl::StrJoin(contributors, ","), "] of ", expected, ", ",
                      bytes_in, " bytes in, ", bytes_out, " bytes out (", reason, ")");
}

StepRecord::StepRecord(int64_t step, absl::Time opened, std::vector<WorkerId> expected)
    : step_(step), opened_(opened), expected_(std::move(expected)) {}

void StepRecord::PayloadTaken(absl::Time now) {
  if (!first_payload_.has_value()) first_payload_ = now;
  last_payload_ = now;
}

StepSummary StepRecord::Close(absl::Time now, std::vector<WorkerId> contributors, uint64_t bytes_in,
                              uint64_t bytes_out, std::string reason) const {
  StepSummary summary;
  summary.step = step_;
  summary.duration = now - opened_;
  summary.barrier_wait = first_payload_.has_value() ? now - *first_payload_ : absl::ZeroDuration();
  std::set_difference(expected_.begin(), expected_.end(), contributors.begin(), contributors.end(),
                      std::back_inserter(summary.missing));
  summary.contributors = std::move(contributors);
  summary.expected = expected_.size();
  summary.bytes_in = bytes_in;
  summary.bytes_out = bytes_out;
  summary.reason = std::move(reason);
  return summary;
}

}  // namespace demod
