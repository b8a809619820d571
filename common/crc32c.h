// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum that closes every wire
// message (docs/wire-format.md). Same values as iSCSI, ext4 and LevelDB's crc32c::Value:
// Crc32c("123456789") == 0xE3069283.
//
// SSE4.2's crc32 instruction where the CPU has it, else portable table-driven code
// (slicing-by-8); both give the same values. Pure functions; thread-safe.
#ifndef DEMOD_COMMON_CRC32C_H_
#define DEMOD_COMMON_CRC32C_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace demod {

// The CRC-32C of `prefix + data`, given crc == Crc32c(prefix). Crc32cExtend(0, x) == Crc32c(x).
uint32_t Crc32cExtend(uint32_t crc, absl::string_view data);

inline uint32_t Crc32c(absl::string_view data) { return Crc32cExtend(0, data); }

// The table-driven path alone (tests compare the two).
uint32_t Crc32cExtendPortable(uint32_t crc, absl::string_view data);

}  // namespace demod

#endif  // DEMOD_COMMON_CRC32C_H_
