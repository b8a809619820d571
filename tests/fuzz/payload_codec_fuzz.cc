// The payload and aggregate decoders with their validation: any bytes either decode into what
// validates and encodes back to a value that decodes the same, or are refused with a reason.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/payload_codec.h"
#include "tests/fuzz/fuzz_tables.h"

namespace demod {
namespace {

void CheckPayload(absl::string_view bytes) {
  absl::StatusOr<StepPayload> payload = DecodeStepPayload(bytes, FuzzLayouts());
  RequireReason(payload.status());
  if (!payload.ok()) return;
  if (!ValidateStepPayload(*payload, FuzzLayouts()).ok()) __builtin_trap();
  absl::StatusOr<std::string> encoded = EncodeStepPayload(*payload, FuzzLayouts());
  if (!encoded.ok()) __builtin_trap();
  absl::StatusOr<StepPayload> again = DecodeStepPayload(*encoded, FuzzLayouts());
  if (!again.ok() || again->step != payload->step) __builtin_trap();
  absl::StatusOr<std::string> encoded_again = EncodeStepPayload(*again, FuzzLayouts());
  if (!encoded_again.ok() || *encoded_again != *encoded) __builtin_trap();
}

void CheckAggregate(absl::string_view bytes) {
  absl::StatusOr<StepAggregate> aggregate = DecodeStepAggregate(bytes, FuzzLayouts());
  RequireReason(aggregate.status());
  if (!aggregate.ok()) return;
  if (!ValidateStepAggregate(*aggregate, FuzzLayouts()).ok()) __builtin_trap();
  absl::StatusOr<std::string> encoded = EncodeStepAggregate(*aggregate, FuzzLayouts());
  if (!encoded.ok()) __builtin_trap();
  absl::StatusOr<StepAggregate> again = DecodeStepAggregate(*encoded, FuzzLayouts());
  if (!again.ok() || again->step != aggregate->step) __builtin_trap();
}

}  // namespace
}  // namespace demod

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  demod::CheckPayload(bytes);
  demod::CheckAggregate(bytes);
  return 0;
}
