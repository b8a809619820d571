#include "server/run_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/tensor_table.h"

namespace demod {
namespace {

constexpr char kFileName[] = "run.json";
constexpr char kTempFileName[] = "run.json.tmp";
constexpr char kFormat[] = "demod-run-state";
constexpr int64_t kVersion = 1;

// ordered_json keeps fields in the order written, so the file reads like the header's format.
using Json = nlohmann::ordered_json;

struct DTypeName {
  v1::DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {
    {v1::DTYPE_FLOAT32, "float32"},
    {v1::DTYPE_BFLOAT16, "bfloat16"},
    {v1::DTYPE_FLOAT16, "float16"},
    {v1::DTYPE_FLOAT64, "float64"},
};

constexpr const char* kEvents[] = {"join", "leave", "evict"};

bool IsKnownEvent(const std::string& event) {
  for (const char* known : kEvents) {
    if (event == known) return true;
  }
  return false;
}

// Compact, and never throwing: strings that are not UTF-8 (which proto3 strings cannot be) would
// otherwise make dump() throw; they are written with U+FFFD instead.
std::string Dump(const Json& json) {
  return json.dump(/*indent=*/-1, /*indent_char=*/' ', /*ensure_ascii=*/false,
                   Json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------------
// Validation shared by Save (INVALID_ARGUMENT) and Load (DATA_LOSS), so that whatever Save
// writes, Load reads.

absl::Status CheckRun(const PersistedRun& run, size_t first_event) {
  absl::Status config = run.config.Validate();
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat("config: ", config.message()));
  if (run.completed_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("completed_steps must be >= 0, got ", run.completed_steps));
  }
  if (!run.tensors.empty()) {
    const TensorSpecs specs(run.tensors.begin(), run.tensors.end());
    absl::Status valid = ValidateTensorSpecs(specs).status();
    if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("tensors: ", valid.message()));
  }
  for (size_t i = first_event; i < run.history.size(); ++i) {
    const MembershipEvent& e = run.history[i];
    if (e.step < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("history[", i, "]: step must be >= 0, got ", e.step));
    }
    if (!IsKnownEvent(e.event)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "history[", i, "]: event must be join, leave or evict, got '", e.event, "'"));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Encoding

Json EncodeTensor(const v1::TensorSpec& spec) {
  const char* dtype = "";
  for (const DTypeName& d : kDTypeNames) {
    if (d.dtype == spec.dtype()) dtype = d.name;
  }
  return Json{{"name", spec.name()},
              {"shape", std::vector<int64_t>(spec.shape().begin(), spec.shape().end())},
              {"dtype", dtype}};
}

Json EncodeEvent(const MembershipEvent& e) {
  return Json{{"step", e.step},
              {"unix_ms", e.unix_ms},
              {"worker", e.worker},
              {"event", e.event},
              {"reason", e.reason}};
}

// One top-level field per line and one array element per line: readable, and a diff of two
// states shows which events were added.
void AppendArray(const std::string& name, const std::vector<Json>& elements, std::string* out) {
  absl::StrAppend(out, "  \"", name, "\": [");
  for (size_t i = 0; i < elements.size(); ++i) {
    absl::StrAppend(out, i == 0 ? "\n    " : ",\n    ", Dump(elements[i]));
  }
  absl::StrAppend(out, elements.empty() ? "]" : "\n  ]");
}

std::string Encode(const PersistedRun& run, size_t first_event) {
  std::vector<Json> tensors;
  for (const v1::TensorSpec& spec : run.tensors) tensors.push_back(EncodeTensor(spec));
  std::vector<Json> history;
  for (size_t i = first_event; i < run.history.size(); ++i) {
    history.push_back(EncodeEvent(run.history[i]));
  }
  std::string out = "{\n";
  absl::StrAppend(&out, "  \"format\": ", Dump(kFormat), ",\n");
  absl::StrAppend(&out, "  \"version\": ", kVersion, ",\n");
  absl::StrAppend(&out, "  \"config\": ", RunConfigToJson(run.config), ",\n");
  absl::StrAppend(&out, "  \"completed_steps\": ", run.completed_steps, ",\n");
  AppendArray("tensors", tensors, &out);
  absl::StrAppend(&out, ",\n");
  AppendArray("history", history, &out);
  absl::StrAppend(&out, "\n}\n");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding. Errors name the field by its path ("history[3].step"); the caller adds the file and
// makes them DATA_LOSS.

std::string Shown(const Json& json) {
  constexpr size_t kMaxShown = 40;
  std::string text = Dump(json);
  if (text.size() > kMaxShown) text = absl::StrCat(text.substr(0, kMaxShown), "...");
  return text;
}

absl::Status Expected(absl::string_view path, absl::string_view what, const Json& got) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": expected ", what, ", got ", Shown(got)));
}

// `json` must be an object with exactly the fields `names`.
absl::Status CheckFields(const Json& json, absl::string_view path,
                         std::initializer_list<const char*> names) {
  if (!json.is_object()) return Expected(path.empty() ? "top level" : path, "an object", json);
  const std::string prefix = path.empty() ? "" : absl::StrCat(path, ".");
  for (const char* name : names) {
    if (!json.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("missing field '", prefix, name, "'"));
    }
  }
  for (const auto& [key, value] : json.items()) {
    bool known = false;
    for (const char* name : names) known = known || key == name;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat("unknown field '", prefix, key, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeInt(const Json& json, const std::string& path, int64_t* out) {
  // An unsigned beyond int64 would wrap in get<int64_t>().
  if (!json.is_number_integer() ||
      (json.is_number_unsigned() &&
       json.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    return Expected(path, "a 64-bit integer", json);
  }
  *out = json.get<int64_t>();
  return absl::OkStatus();
}

absl::Status DecodeString(const Json& json, const std::string& path, std::string* out) {
  if (!json.is_string()) return Expected(path, "a string", json);
  *out = json.get<std::string>();
  return absl::OkStatus();
}

absl::Status DecodeArray(const Json& json, const std::string& path) {
  return json.is_array() ? absl::OkStatus() : Expected(path, "an array", json);
}

absl::Status DecodeTensor(const Json& json, const std::string& path, v1::TensorSpec* spec) {
  DEMOD_RETURN_IF_ERROR(CheckFields(json, path, {"name", "shape", "dtype"}));
  std::string name;
  DEMOD_RETURN_IF_ERROR(DecodeString(json["name"], path + ".name", &name));
  spec->set_name(std::move(name));
  DEMOD_RETURN_IF_ERROR(DecodeArray(json["shape"], path + ".shape"));
  for (size_t i = 0; i < json["shape"].size(); ++i) {
    int64_t dim = 0;
    DEMOD_RETURN_IF_ERROR(DecodeInt(json["shape"][i], absl::StrCat(path, ".shape[", i, "]"), &dim));
    spec->add_shape(dim);
  }
  std::string dtype;
  DEMOD_RETURN_IF_ERROR(DecodeString(json["dtype"], path + ".dtype", &dtype));
  for (const DTypeName& d : kDTypeNames) {
    if (dtype == d.name) {
      spec->set_dtype(d.dtype);
      return absl::OkStatus();
    }
  }
  return Expected(path + ".dtype", "float32, bfloat16, float16 or float64", json["dtype"]);
}

absl::Status DecodeEvent(const Json& json, const std::string& path, MembershipEvent* e) {
  DEMOD_RETURN_IF_ERROR(CheckFields(json, path, {"step", "unix_ms", "worker", "event", "reason"}));
  DEMOD_RETURN_IF_ERROR(DecodeInt(json["step"], path + ".step", &e->step));
  DEMOD_RETURN_IF_ERROR(DecodeInt(json["unix_ms"], path + ".unix_ms", &e->unix_ms));
  DEMOD_RETURN_IF_ERROR(DecodeString(json["worker"], path + ".worker", &e->worker));
  DEMOD_RETURN_IF_ERROR(DecodeString(json["event"], path + ".event", &e->event));
  return DecodeString(json["reason"], path + ".reason", &e->reason);
}

absl::Status Decode(const Json& json, PersistedRun* run) {
  // Format and version first, so a newer file says so instead of failing on a field it added.
  if (!json.is_object()) return Expected("top level", "an object", json);
  if (!json.contains("format") || json["format"] != kFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a demod run state (expected \"format\": \"", kFormat, "\")"));
  }
  int64_t version = 0;
  if (!json.contains("version")) return absl::InvalidArgumentError("missing field 'version'");
  DEMOD_RETURN_IF_ERROR(DecodeInt(json["version"], "version", &version));
  if (version != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported run state version ", version,
                                                   "; this build reads version ", kVersion));
  }
  DEMOD_RETURN_IF_ERROR(CheckFields(
      json, "", {"format", "version", "config", "completed_steps", "tensors", "history"}));

  if (!json["config"].is_object()) return Expected("config", "an object", json["config"]);
  // Every field is stored, so the default base is never consulted. Line and column in its
  // messages count within the config object, which is one line of the file.
  absl::StatusOr<RunConfig> config = ParseRunConfig(Dump(json["config"]));
  if (!config.ok())
    return absl::InvalidArgumentError(absl::StrCat("config: ", config.status().message()));
  run->config = *std::move(config);

  DEMOD_RETURN_IF_ERROR(
      DecodeInt(json["completed_steps"], "completed_steps", &run->completed_steps));

  DEMOD_RETURN_IF_ERROR(DecodeArray(json["tensors"], "tensors"));
  for (size_t i = 0; i < json["tensors"].size(); ++i) {
    DEMOD_RETURN_IF_ERROR(DecodeTensor(json["tensors"][i], absl::StrCat("tensors[", i, "]"),
                                       &run->tensors.emplace_back()));
  }
  DEMOD_RETURN_IF_ERROR(DecodeArray(json["history"], "history"));
  for (size_t i = 0; i < json["history"].size(); ++i) {
    DEMOD_RETURN_IF_ERROR(DecodeEvent(json["history"][i], absl::StrCat("history[", i, "]"),
                                      &run->history.emplace_back()));
  }
  return CheckRun(*run, /*first_event=*/0);
}

// ---------------------------------------------------------------------------------------------
// Files

absl::Status ErrnoError(int error, absl::string_view what, const std::string& path) {
  return absl::ErrnoToStatus(error, absl::StrCat(what, " '", path, "'"));
}

// NOT_FOUND when the file does not exist.
absl::Status ReadFile(const std::string& path, std::string* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot open", path);
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;  // e.g. EISDIR
      ::close(fd);
      return ErrnoError(error, "cannot read", path);
    }
    out->append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return absl::OkStatus();
}

// Writes and fsyncs `path`, replacing what was there (a crashed Save's leftover included).
absl::Status WriteFileSynced(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "cannot create", path);
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return ErrnoError(error, "cannot write", path);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoError(error, "cannot fsync", path);
  }
  // close() can report a deferred write error (e.g. on NFS).
  if (::close(fd) != 0) return ErrnoError(errno, "cannot close", path);
  return absl::OkStatus();
}

// Makes a rename inside `dir` durable: without it, a power loss may bring back the old entry.
absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot open directory", dir);
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoError(error, "cannot fsync directory", dir);
  }
  ::close(fd);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RunStore> RunStore::Open(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("the state directory path is empty");
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("state directory '", dir, "' exists and is not a directory"));
  }
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  // libstdc++ reports POSIX errors in the generic or system category, both errno values.
  if (error) return ErrnoError(error.value(), "cannot create state directory", dir);
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return ErrnoError(errno, "cannot write in state directory", dir);
  }
  return RunStore(dir);
}

absl::StatusOr<std::optional<PersistedRun>> RunStore::Load() const {
  const std::string path = absl::StrCat(dir_, "/", kFileName);
  std::string text;
  absl::Status read = ReadFile(path, &text);
  if (absl::IsNotFound(read)) return std::nullopt;
  DEMOD_RETURN_IF_ERROR(read);

  Json json;
  try {
    json = Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
  PersistedRun run;
  absl::Status decoded;
  try {
    decoded = Decode(json, &run);
  } catch (const Json::exception& e) {
    // Every access is type-checked first; this only keeps an overlooked case from escaping.
    decoded = absl::InvalidArgumentError(e.what());
  }
  if (!decoded.ok()) return absl::DataLossError(absl::StrCat(path, ": ", decoded.message()));
  return run;
}

absl::Status RunStore::Save(const PersistedRun& run) const {
  const size_t first_event =
      run.history.size() > kMaxHistory ? run.history.size() - kMaxHistory : 0;
  DEMOD_RETURN_IF_ERROR(CheckRun(run, first_event));
  const std::string text = Encode(run, first_event);

  const std::string temp_path = absl::StrCat(dir_, "/", kTempFileName);
  const std::string path = absl::StrCat(dir_, "/", kFileName);
  absl::Status written = WriteFileSynced(temp_path, text);
  if (!written.ok()) {
    ::unlink(temp_path.c_str());  // best effort; the next Save truncates it anyway
    return written;
  }
  if (::rename(temp_path.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp_path.c_str());
    return ErrnoError(error, absl::StrCat("cannot rename '", temp_path, "' to"), path);
  }
  return SyncDirectory(dir_);
}

}  // namespace demod
