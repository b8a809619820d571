// How the coordinator's tests introduce a synthetic worker: the join of a CPU worker named
// `name` with the tensor table of `shapes`.
#ifndef DEMOD_TESTS_SUPPORT_SYNTHETIC_WORKER_H_
#define DEMOD_TESTS_SUPPORT_SYNTHETIC_WORKER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "worker/client/coordinator_client.h"

namespace demod {

ClientOptions SyntheticWorkerOptions(
    const std::string& target, const std::string& name,
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes);

}  // namespace demod

#endif  // DEMOD_TESTS_SUPPORT_SYNTHETIC_WORKER_H_
