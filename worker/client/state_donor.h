// What a worker keeps while it is a donor: a copy of its parameters for each joiner it is
// sending them to. The coordinator pulls a transfer one range at a time (Control
// KIND_SEND_STATE, docs/coordinator.md): the first range (offset 0) takes the copy, of the
// last step the worker applied, and every later range of that transfer is served from it, so
// the joiner receives one consistent step however many steps the transfer spans. A copy is
// dropped once its last byte is sent or when the coordinator ends the transfer (length 0).
//
// Thread-compatible; no LibTorch (the caller serializes its parameters).
#ifndef DEMOD_WORKER_CLIENT_STATE_DONOR_H_
#define DEMOD_WORKER_CLIENT_STATE_DONOR_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "worker/client/coordinator_client.h"

namespace demod {

class StateDonor {
 public:
  // Answers a kSendState `request` through `client`. At offset 0 the copy is
  // `serialize()`, the parameters after `applied_step`. FAILED_PRECONDITION for a later range
  // of a transfer this donor holds no copy for; the client's errors otherwise.
  absl::Status Serve(CoordinatorClient& client, const ClientEvent& request, int64_t applied_step,
                     absl::FunctionRef<std::string()> serialize);

  // Transfers under way: the copies held.
  size_t copies() const { return copies_.size(); }

 private:
  struct Copy {
    int64_t step = 0;
    std::string parameters;
  };
  std::map<uint32_t, Copy> copies_;  // by joiner
};

}  // namespace demod

#endif  // DEMOD_WORKER_CLIENT_STATE_DONOR_H_
