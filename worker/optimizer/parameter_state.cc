#include "worker/optimizer/parameter_state.h"

#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/byte_coding.h"
#include "common/crc32c.h"

namespace demod {
namespace {

constexpr absl::string_view kMagic = "DMS1";

int DtypeCode(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return 0;
    case at::kBFloat16:
      return 1;
    case at::kHalf:
      return 2;
    case at::kDouble:
      return 3;
    default:
      return -1;
  }
}

// The tensor's elements as contiguous CPU bytes.
at::Tensor HostContiguous(const at::Tensor& t) { return t.detach().to(at::kCPU).contiguous(); }

absl::string_view Bytes(const at::Tensor& host) {
  return absl::string_view(static_cast<const char*>(host.data_ptr()), host.nbytes());
}

}  // namespace

std::string SerializeTensors(const std::vector<NamedTensor>& tensors) {
  std::string out(kMagic);
  PutU32(&out, static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor host = HostContiguous(tensor);
    PutU32(&out, static_cast<uint32_t>(name.size()));
    out.append(name);
    PutU8(&out, static_cast<uint8_t>(DtypeCode(host.scalar_type())));
    PutU8(&out, static_cast<uint8_t>(host.dim()));
    for (int64_t d : host.sizes()) PutU64(&out, static_cast<uint64_t>(d));
    PutU64(&out, host.nbytes());
    const absl::string_view bytes = Bytes(host);
    out.append(bytes.data(), bytes.size());
  }
  PutU32(&out, Crc32c(out));
  return out;
}

absl::Status LoadTensors(absl::string_view bytes, const std::vector<NamedTensor>& tensors) {
  if (bytes.size() < kMagic.size() + 8 || bytes.substr(0, kMagic.size()) != kMagic) {
    return absl::DataLossError("parameters: not a demod parameter state (bad magic or too short)");
  }
  const absl::string_view body = bytes.substr(0, bytes.size() - 4);
  if (Crc32c(body) != DecodeU32(bytes.data() + body.size())) {
    return absl::DataLossError("parameters: checksum mismatch");
  }
  ByteReader reader(body.substr(kMagic.size()));
  uint32_t count = 0;
  reader.ReadU32(&count);
  if (count != tensors.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameters: ", count, " tensors, the model has ", tensors.size()));
  }
  // Everything is checked before anything is copied, so a bad state changes nothing.
  std::vector<absl::string_view> data(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    uint32_t name_size = 0;
    absl::string_view got_name;
    uint8_t dtype = 0, rank = 0;
    if (!reader.ReadU32(&name_size) || !reader.ReadBytes(name_size, &got_name) ||
        !reader.ReadU8(&dtype) || !reader.ReadU8(&rank)) {
      return absl::DataLossError(absl::StrCat("parameters: truncated at tensor ", i));
    }
    if (got_name != name) {
      return absl::InvalidArgumentError(absl::StrCat("parameters: tensor ", i, " is '", got_name,
                                                     "', the model's is '", name, "'"));
    }
    std::vector<int64_t> dims(rank);
    for (int64_t& d : dims) {
      uint64_t v = 0;
      if (!reader.ReadU64(&v)) return absl::DataLossError("parameters: truncated shape");
      d = static_cast<int64_t>(v);
    }
    if (dtype != DtypeCode(tensor.scalar_type()) || dims != tensor.sizes().vec()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameters: '", name, "' has dtype code ", dtype, " and shape [",
          absl::StrJoin(dims, ","), "]; the model's has ", DtypeCode(tensor.scalar_type()),
          " and [", absl::StrJoin(tensor.sizes().vec(), ","), "]"));
    }
    uint64_t nbytes = 0;
    if (!reader.ReadU64(&nbytes) || nbytes != tensor.nbytes() ||
        !reader.ReadBytes(nbytes, &data[i])) {
      return absl::DataLossError(absl::StrCat("parameters: '", name, "' data is truncated"));
    }
  }
  if (!reader.empty()) return absl::DataLossError("parameters: trailing bytes");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& tensor = tensors[i].second;
    at::Tensor host = at::empty(tensor.sizes(), tensor.options().device(at::kCPU));
    std::memcpy(host.data_ptr(), data[i].data(), data[i].size());
    tensors[i].second.copy_(host);
  }
  return absl::OkStatus();
}

uint64_t Fingerprint(const std::vector<NamedTensor>& tensors) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor host = HostContiguous(tensor);
    for (unsigned char c : Bytes(host)) {
      hash ^= c;
      hash *= 0x100000001b3ull;
    }
  }
  return hash;
}

}  // namespace demod
