// The frame assembler under any sequence of frames, in both restart policies: it never hands
// out a message other than of the announced size, never holds more than its bound, and
// refuses with a reason.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/frame_assembler.h"
#include "tests/fuzz/fuzz_tables.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  constexpr uint64_t kMaxMessage = 1 << 14;
  constexpr uint64_t kMaxFrame = 1 << 10;
  demod::FrameAssembler assembler(kMaxMessage, kMaxFrame,
                                  input.ConsumeBool()
                                      ? demod::FrameAssembler::Restarts::kRefused
                                      : demod::FrameAssembler::Restarts::kAllowedAtOffsetZero);
  while (input.remaining_bytes() > 0) {
    const int64_t id = input.ConsumeIntegralInRange<int64_t>(-1, 3);
    const uint64_t total = input.ConsumeIntegralInRange<uint64_t>(0, 2 * kMaxMessage);
    const uint64_t offset = input.ConsumeIntegralInRange<uint64_t>(0, 2 * kMaxMessage);
    std::string frame = input.ConsumeRandomLengthString(2 * kMaxFrame);
    absl::StatusOr<std::optional<std::string>> message =
        assembler.AddOwned(id, total, offset, std::move(frame));
    demod::RequireReason(message.status());
    if (message.ok() && message->has_value()) {
      if ((*message)->size() != total || total > kMaxMessage) __builtin_trap();
      if (assembler.in_progress()) __builtin_trap();
    }
  }
  return 0;
}
