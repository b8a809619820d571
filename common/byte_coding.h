// Little-endian fixed-width coding of integers and floats, in the style of LevelDB's
// util/coding.h: the building blocks of the wire format (docs/wire-format.md).
//
// Put* append to a std::string; Encode*/Decode* work on raw buffers the caller has sized.
// Nothing assumes alignment (bytes are assembled by shifts or memcpy), so any offset works.
//
// ByteReader walks a buffer it does not own; every Read* checks the remaining length first and
// returns false, consuming nothing, when the buffer is too short, so a decoder cannot read past
// the end. A ByteReader is not thread-safe; the functions are.
#ifndef DEMOD_COMMON_BYTE_CODING_H_
#define DEMOD_COMMON_BYTE_CODING_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/string_view.h"

namespace demod {

inline void EncodeU16(char* dst, uint16_t value) {
  dst[0] = static_cast<char>(value & 0xff);
  dst[1] = static_cast<char>(value >> 8);
}

inline void EncodeU32(char* dst, uint32_t value) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

inline void EncodeU64(char* dst, uint64_t value) {
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

inline void EncodeF32(char* dst, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  EncodeU32(dst, bits);
}

inline uint16_t DecodeU16(const char* src) {
  const auto* p = reinterpret_cast<const unsigned char*>(src);
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

inline uint32_t DecodeU32(const char* src) {
  const auto* p = reinterpret_cast<const unsigned char*>(src);
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

inline uint64_t DecodeU64(const char* src) {
  return static_cast<uint64_t>(DecodeU32(src)) | (static_cast<uint64_t>(DecodeU32(src + 4)) << 32);
}

inline float DecodeF32(const char* src) {
  const uint32_t bits = DecodeU32(src);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

void PutU8(std::string* dst, uint8_t value);
void PutU16(std::string* dst, uint16_t value);
void PutU32(std::string* dst, uint32_t value);
void PutU64(std::string* dst, uint64_t value);
void PutF32(std::string* dst, float value);

class ByteReader {
 public:
  explicit ByteReader(absl::string_view bytes) : bytes_(bytes) {}

  bool ReadU8(uint8_t* value);
  bool ReadU16(uint16_t* value);
  bool ReadU32(uint32_t* value);
  bool ReadU64(uint64_t* value);
  bool ReadF32(float* value);
  // The next n bytes, viewed in place (valid as long as the underlying buffer).
  bool ReadBytes(size_t n, absl::string_view* bytes);

  size_t remaining() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

 private:
  absl::string_view bytes_;
};

}  // namespace demod

#endif  // DEMOD_COMMON_BYTE_CODING_H_
