#include "common/program.h"

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"

namespace demod {
namespace {

std::string& ProgramName() {
  static std::string* name = new std::string("demod");
  return *name;
}

sigset_t StopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

}  // namespace

void ParseFlagsOrExit(int argc, char** argv, absl::string_view program, absl::string_view usage) {
  const sigset_t signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ProgramName() = std::string(program);
  absl::SetProgramUsageMessage(usage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    ExitWithReason(kExitUsage, absl::StrCat("unexpected argument '", positional[1], "'"));
  }
}

void OnStopSignal(std::function<void(int signal)> on_signal) {
  std::thread([on_signal = std::move(on_signal)] {
    const sigset_t signals = StopSignals();
    int signal = 0;
    if (sigwait(&signals, &signal) != 0) return;
    on_signal(signal);
    // A second signal means the orderly stop is taking too long for whoever is waiting.
    if (sigwait(&signals, &signal) == 0) {
      std::fprintf(stderr, "%s: second signal %d: exiting now\n", ProgramName().c_str(), signal);
      std::_Exit(kExitFailed);
    }
  }).detach();
}

void KeepLargeBlocksInHeap() {
  // Fixed values also turn off glibc's dynamic threshold, which rises and falls with what was
  // freed last.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

void ExitWithReason(int code, absl::string_view message) {
  std::fprintf(stderr, "%s: %.*s\n", ProgramName().c_str(), static_cast<int>(message.size()),
               message.data());
  std::exit(code);
}

absl::Status WriteFileWhole(const std::string& path, absl::string_view contents,
                            absl::string_view what) {
  const std::string temp = absl::StrCat(path, ".tmp.", getpid());
  const auto failed = [&](const char* doing) {
    const int error = errno;
    std::remove(temp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot write the ", what, " file ", path, " (",
                                               doing, "): ", std::strerror(error)));
  };
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return failed("create");
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      close(fd);
      errno = error;
      return failed("write");
    }
    written += static_cast<size_t>(n);
  }
  if (close(fd) != 0) return failed("close");
  if (std::rename(temp.c_str(), path.c_str()) != 0) return failed("rename");
  return absl::OkStatus();
}

std::string ReadFileOrExit(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ExitWithReason(kExitUsage, absl::StrCat("cannot read the ", what, " file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace demod
