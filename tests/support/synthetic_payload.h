// Realistic step payloads without a model: for every tensor of a layout table, topk distinct
// sorted indices per chunk with random values, as a DeMo worker would select them. Used by
// the coordinator's tests and by demod-loadgen.
//
// Thread-compatible (a generator per thread).
#ifndef DEMOD_TESTS_SUPPORT_SYNTHETIC_PAYLOAD_H_
#define DEMOD_TESTS_SUPPORT_SYNTHETIC_PAYLOAD_H_

#include <cstdint>
#include <random>
#include <vector>

#include "common/sparse_payload.h"
#include "demod/v1/coordinator.pb.h"

namespace demod {

StepPayload SyntheticPayload(const LayoutTable& table, int64_t step, ValueEncoding encoding,
                             std::mt19937_64& random);

// The proto tensor table for shapes, as a worker announces it (float32 tensors).
google::protobuf::RepeatedPtrField<v1::TensorSpec> TensorSpecsOf(
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes);

}  // namespace demod

#endif  // DEMOD_TESTS_SUPPORT_SYNTHETIC_PAYLOAD_H_
