// The byte form of a model's parameters (what a donor streams to a joiner through the
// coordinator, and what a checkpoint holds), and the fingerprint workers report so the
// coordinator can tell whether their parameters are still identical.
//
// Format (little-endian): "DMS1", u32 tensor count, then per tensor: u32 name length, name,
// u8 dtype (0 float32, 1 bfloat16, 2 float16, 3 float64), u8 rank, rank x u64 dims,
// u64 byte count, the raw element bytes; then a CRC-32C of everything before it.
//
// The fingerprint is FNV-1a (64-bit) over the same element bytes in table order: equal
// parameters give equal fingerprints on any device.
//
// Thread-compatible. The tensors may live on any device; they are copied through the CPU.
#ifndef DEMOD_WORKER_OPTIMIZER_PARAMETER_STATE_H_
#define DEMOD_WORKER_OPTIMIZER_PARAMETER_STATE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "worker/optimizer/named_tensor.h"

namespace demod {

std::string SerializeTensors(const std::vector<NamedTensor>& tensors);

// Copies `bytes` into `tensors` (in place, on their devices). DATA_LOSS for a checksum
// mismatch or truncation; INVALID_ARGUMENT naming the tensor when names, dtypes or shapes
// differ from `tensors`. On error nothing is changed.
absl::Status LoadTensors(absl::string_view bytes, const std::vector<NamedTensor>& tensors);

uint64_t Fingerprint(const std::vector<NamedTensor>& tensors);

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_PARAMETER_STATE_H_
