#include "worker/client/state_donor.h"

#include "absl/strings/str_cat.h"

namespace demod {

absl::Status StateDonor::Serve(CoordinatorClient& client, const ClientEvent& request,
                               int64_t applied_step, absl::FunctionRef<std::string()> serialize) {
  if (request.state_length == 0) {
    copies_.erase(request.joiner);
    return absl::OkStatus();
  }
  if (request.state_offset == 0) copies_[request.joiner] = Copy{applied_step, serialize()};
  auto found = copies_.find(request.joiner);
  if (found == copies_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("asked for parameters from byte ", request.state_offset, " for worker ",
                     request.joiner, ", whose transfer this worker never started"));
  }
  const Copy& copy = found->second;
  absl::Status sent = client.SendState(request, copy.step, copy.parameters);
  if (!sent.ok() || request.state_offset + request.state_length >= copy.parameters.size()) {
    copies_.erase(found);
  }
  return sent;
}

}  // namespace demod
