// The IDX format of (Fashion-)MNIST (http://yann.lecun.com/exdb/mnist/): a 4-byte magic
// (0, 0, element type, number of dimensions), each dimension as a big-endian uint32, then the
// elements in row-major order. Only unsigned-byte elements (type 0x08) are read: the images
// and labels of both data sets are bytes.
//
// Every length is checked before a byte is trusted; a malformed file is DATA_LOSS with a reason
// that names the file ("bad magic 0x00000903", "truncated: 47040016 bytes, header says ...").
#ifndef DEMOD_WORKER_MODELS_IDX_FILE_H_
#define DEMOD_WORKER_MODELS_IDX_FILE_H_

#include <ATen/ATen.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace demod {

// A uint8 CPU tensor shaped as the header says. `name` is used in error messages.
absl::StatusOr<at::Tensor> ParseIdx(absl::string_view bytes, absl::string_view name);

// NOT_FOUND when the file cannot be opened; otherwise ParseIdx of its contents.
absl::StatusOr<at::Tensor> ReadIdxFile(const std::string& path);

}  // namespace demod

#endif  // DEMOD_WORKER_MODELS_IDX_FILE_H_
