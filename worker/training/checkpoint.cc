#include "worker/training/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/byte_coding.h"
#include "common/crc32c.h"

namespace demod {
namespace {

constexpr absl::string_view kMagic = "DMC1";

absl::Status OsError(const std::string& what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, absl::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return OsError("cannot write", path);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot create checkpoint directory ", dir, ": ", error.message()));
  }
  std::string bytes(kMagic);
  PutU32(&bytes, static_cast<uint32_t>(checkpoint.run_id.size()));
  bytes.append(checkpoint.run_id);
  PutU64(&bytes, static_cast<uint64_t>(checkpoint.step));
  PutU64(&bytes, checkpoint.parameters.size());
  bytes.append(checkpoint.parameters);
  PutU64(&bytes, checkpoint.momentum.size());
  bytes.append(checkpoint.momentum);
  PutU32(&bytes, Crc32c(bytes));

  const std::string path = dir + "/checkpoint.bin";
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return OsError("cannot create", tmp);
  absl::Status written = WriteAll(fd, bytes, tmp);
  if (written.ok() && fsync(fd) != 0) written = OsError("cannot sync", tmp);
  close(fd);
  if (!written.ok()) {
    unlink(tmp.c_str());
    return written;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) return OsError("cannot rename onto", path);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);  // the rename itself survives a power loss
    close(dir_fd);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Checkpoint>> LoadCheckpoint(const std::string& dir) {
  const std::string path = dir + "/checkpoint.bin";
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::optional<Checkpoint>();
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  const auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path, " is corrupt: ", why));
  };
  if (bytes.size() < kMagic.size() + 4 || absl::string_view(bytes).substr(0, 4) != kMagic) {
    return corrupt("not a demod checkpoint");
  }
  const absl::string_view body = absl::string_view(bytes).substr(0, bytes.size() - 4);
  if (Crc32c(body) != DecodeU32(bytes.data() + body.size())) return corrupt("checksum mismatch");
  ByteReader reader(body.substr(kMagic.size()));
  Checkpoint checkpoint;
  uint32_t id_size = 0;
  uint64_t step = 0, size = 0;
  absl::string_view view;
  if (!reader.ReadU32(&id_size) || !reader.ReadBytes(id_size, &view)) return corrupt("run id");
  checkpoint.run_id = std::string(view);
  if (!reader.ReadU64(&step)) return corrupt("step");
  checkpoint.step = static_cast<int64_t>(step);
  if (!reader.ReadU64(&size) || !reader.ReadBytes(size, &view)) return corrupt("parameters");
  checkpoint.parameters = std::string(view);
  if (!reader.ReadU64(&size) || !reader.ReadBytes(size, &view)) return corrupt("momentum");
  checkpoint.momentum = std::string(view);
  if (!reader.empty()) return corrupt("trailing bytes");
  return std::optional<Checkpoint>(std::move(checkpoint));
}

}  // namespace demod
