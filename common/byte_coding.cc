#include "common/byte_coding.h"

namespace demod {

void PutU8(std::string* dst, uint8_t value) { dst->push_back(static_cast<char>(value)); }

void PutU16(std::string* dst, uint16_t value) {
  char buf[2];
  EncodeU16(buf, value);
  dst->append(buf, sizeof(buf));
}

void PutU32(std::string* dst, uint32_t value) {
  char buf[4];
  EncodeU32(buf, value);
  dst->append(buf, sizeof(buf));
}

void PutU64(std::string* dst, uint64_t value) {
  char buf[8];
  EncodeU64(buf, value);
  dst->append(buf, sizeof(buf));
}

void PutF32(std::string* dst, float value) {
  char buf[4];
  EncodeF32(buf, value);
  dst->append(buf, sizeof(buf));
}

bool ByteReader::ReadU8(uint8_t* value) {
  if (bytes_.empty()) return false;
  *value = static_cast<uint8_t>(bytes_[0]);
  bytes_.remove_prefix(1);
  return true;
}

bool ByteReader::ReadU16(uint16_t* value) {
  if (bytes_.size() < 2) return false;
  *value = DecodeU16(bytes_.data());
  bytes_.remove_prefix(2);
  return true;
}

bool ByteReader::ReadU32(uint32_t* value) {
  if (bytes_.size() < 4) return false;
  *value = DecodeU32(bytes_.data());
  bytes_.remove_prefix(4);
  return true;
}

bool ByteReader::ReadU64(uint64_t* value) {
  if (bytes_.size() < 8) return false;
  *value = DecodeU64(bytes_.data());
  bytes_.remove_prefix(8);
  return true;
}

bool ByteReader::ReadF32(float* value) {
  if (bytes_.size() < 4) return false;
  *value = DecodeF32(bytes_.data());
  bytes_.remove_prefix(4);
  return true;
}

bool ByteReader::ReadBytes(size_t n, absl::string_view* bytes) {
  if (bytes_.size() < n) return false;
  *bytes = bytes_.substr(0, n);
  bytes_.remove_prefix(n);
  return true;
}

}  // namespace demod
