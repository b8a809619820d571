// Run configuration parsing (YAML and JSON): any text is either a configuration that
// validates and survives a round trip through JSON, or refused with a reason.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/run_config.h"
#include "tests/fuzz/fuzz_tables.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<demod::RunConfig> config = demod::ParseRunConfig(text);
  demod::RequireReason(config.status());
  if (!config.ok()) return 0;
  if (!config->Validate().ok()) __builtin_trap();
  const std::string json = demod::RunConfigToJson(*config);
  absl::StatusOr<demod::RunConfig> again = demod::ParseRunConfig(json);
  if (!again.ok() || demod::RunConfigToJson(*again) != json) __builtin_trap();
  return 0;
}
