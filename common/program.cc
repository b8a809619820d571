#include "common/program.h"

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
  bool written = false;
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.close();
    written = !out.fail();
  }
  const int error = errno;
  if (written && std::rename(temp.c_str(), path.c_str()) == 0) return absl::OkStatus();
  const int rename_error = errno;
  std::remove(temp.c_str());
  return absl::UnavailableError(absl::StrCat("cannot write the ", what, " file ", path, ": ",
                                             std::strerror(written ? rename_error : error)));
}

std::string ReadFileOrExit(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ExitWithReason(kExitUsage, absl::StrCat("cannot read the ", what, " file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace demod
