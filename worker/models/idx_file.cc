#include "worker/models/idx_file.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace demod {
namespace {

constexpr unsigned char kUnsignedByte = 0x08;
constexpr int kMaxDims = 4;

uint32_t BigEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t(u[0]) << 24) | (uint32_t(u[1]) << 16) | (uint32_t(u[2]) << 8) | uint32_t(u[3]);
}

}  // namespace

absl::StatusOr<at::Tensor> ParseIdx(absl::string_view bytes, absl::string_view name) {
  if (bytes.size() < 4) {
    return absl::DataLossError(
        absl::StrCat(name, ": truncated IDX header: ", bytes.size(), " bytes"));
  }
  const uint32_t magic = BigEndian32(bytes.data());
  const int dims = static_cast<int>(magic & 0xff);
  if ((magic >> 16) != 0 || dims < 1 || dims > kMaxDims) {
    return absl::DataLossError(absl::StrFormat("%s: bad IDX magic 0x%08x", name, magic));
  }
  if (((magic >> 8) & 0xff) != kUnsignedByte) {
    return absl::DataLossError(absl::StrFormat(
        "%s: IDX element type 0x%02x is not unsigned byte (0x08)", name, (magic >> 8) & 0xff));
  }
  const size_t header = 4 + 4 * size_t(dims);
  if (bytes.size() < header) {
    return absl::DataLossError(absl::StrCat(name, ": truncated IDX header: ", bytes.size(),
                                            " bytes, ", dims, " dimensions need ", header));
  }
  std::vector<int64_t> sizes;
  uint64_t elements = 1;
  for (int d = 0; d < dims; ++d) {
    const uint32_t size = BigEndian32(bytes.data() + 4 + 4 * d);
    // Bounded by the file size at every factor, so the product cannot overflow.
    elements *= size;
    if (elements > bytes.size()) {
      return absl::DataLossError(
          absl::StrCat(name, ": IDX dimensions exceed the file size (", bytes.size(), " bytes)"));
    }
    sizes.push_back(int64_t(size));
  }
  if (bytes.size() - header != elements) {
    return absl::DataLossError(
        absl::StrCat(name, ": ", bytes.size() - header, " bytes of data, the header says ",
                     elements, bytes.size() - header < elements ? " (truncated)" : ""));
  }
  at::Tensor out = at::empty(sizes, at::kByte);
  if (elements > 0) std::memcpy(out.data_ptr<uint8_t>(), bytes.data() + header, elements);
  return out;
}

absl::StatusOr<at::Tensor> ReadIdxFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream content;
  content << in.rdbuf();
  if (!in) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ParseIdx(content.str(), path);
}

}  // namespace demod
