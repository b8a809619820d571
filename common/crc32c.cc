#include "common/crc32c.h"

#include <array>
#include <cstddef>
#include <cstring>

#include "common/byte_coding.h"

namespace demod {
namespace {

constexpr uint32_t kReflectedPolynomial = 0x82F63B78;

// kTables[0] is the classic byte-at-a-time table; kTables[k][b] is the CRC of byte b followed
// by k zero bytes, which lets the main loop fold eight input bytes per iteration.
struct SlicingTables {
  std::array<std::array<uint32_t, 256>, 8> t{};
};

constexpr SlicingTables MakeSlicingTables() {
  SlicingTables tables;
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? kReflectedPolynomial : 0);
    tables.t[0][b] = crc;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (size_t b = 0; b < 256; ++b) {
      const uint32_t previous = tables.t[k - 1][b];
      tables.t[k][b] = (previous >> 8) ^ tables.t[0][previous & 0xff];
    }
  }
  return tables;
}

constexpr SlicingTables kTables = MakeSlicingTables();

uint32_t Crc32cSoftware(uint32_t crc, absl::string_view data);

#if defined(__x86_64__)
// SSE4.2's crc32 instruction computes exactly this CRC (Castagnoli, reflected), 8 bytes per
// instruction: several times faster than the tables, and the coordinator checks every
// payload. Chosen at run time, so the binary still runs on CPUs without it.
__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(uint32_t crc, absl::string_view data) {
  const char* p = data.data();
  size_t n = data.size();
  uint64_t l = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));  // little-endian on x86, as the CRC expects
    l = __builtin_ia32_crc32di(l, word);
  }
  uint32_t l32 = static_cast<uint32_t>(l);
  for (; n > 0; --n, ++p) l32 = __builtin_ia32_crc32qi(l32, static_cast<unsigned char>(*p));
  return ~l32;
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, absl::string_view data) {
#if defined(__x86_64__)
  if (kHaveSse42) return Crc32cHardware(crc, data);
#endif
  return Crc32cSoftware(crc, data);
}

namespace {

uint32_t Crc32cSoftware(uint32_t crc, absl::string_view data) {
  const auto& t = kTables.t;
  const char* p = data.data();
  size_t n = data.size();
  uint32_t l = ~crc;
  while (n >= 8) {
    const uint32_t lo = DecodeU32(p) ^ l;
    const uint32_t hi = DecodeU32(p + 4);
    l = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  for (; n > 0; --n, ++p) l = (l >> 8) ^ t[0][(l ^ static_cast<unsigned char>(*p)) & 0xff];
  return ~l;
}

}  // namespace

uint32_t Crc32cExtendPortable(uint32_t crc, absl::string_view data) {
  return Crc32cSoftware(crc, data);
}

}  // namespace demod
