#include "common/program.h"

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

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

// absl's --help lists only the flags of a source file named after the program and exits 1:
// this one lists the program's own flags (all but absl's) and exits 0.
[[noreturn]] void PrintHelpAndExit(absl::string_view usage) {
  std::vector<absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::StrContains(flag->Filename(), "absl/")) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::printf("%.*s\n\nFlags:\n", static_cast<int>(usage.size()), usage.data());
  for (const absl::CommandLineFlag* flag : flags) {
    std::printf("  --%s (default: %s)\n      %s\n", std::string(flag->Name()).c_str(),
                flag->DefaultValue().empty() ? "\"\"" : flag->DefaultValue().c_str(),
                flag->Help().c_str());
  }
  std::exit(0);
}

// absl exits 1 on an unknown flag or a bad value; demod's programs exit kExitUsage (2) with a
// one-line reason. This pass finds those before absl parses (it parses values into the flags
// as absl then does again). Everything after "--" is positional.
void CheckFlagsOrExit(int argc, char** argv, absl::string_view usage) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") return;
    if (!absl::ConsumePrefix(&arg, "-")) continue;  // positional: ParseFlagsOrExit refuses it
    absl::ConsumePrefix(&arg, "-");
    const size_t equals = arg.find('=');
    const absl::string_view name = arg.substr(0, equals);
    if (name == "help" || name == "helpfull" || name == "helpshort") PrintHelpAndExit(usage);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && equals == absl::string_view::npos) {
        continue;
      }
    }
    if (flag == nullptr) {
      ExitWithReason(kExitUsage, absl::StrCat("unknown flag --", name, " (--help lists them)"));
    }
    std::string value;
    if (equals != absl::string_view::npos) {
      value = std::string(arg.substr(equals + 1));
    } else if (flag->IsOfType<bool>()) {
      value = "true";
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      ExitWithReason(kExitUsage, absl::StrCat("flag --", name, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      ExitWithReason(kExitUsage, absl::StrCat("--", name, "=", value, ": ", error));
    }
  }
}

}  // namespace

void ParseFlagsOrExit(int argc, char** argv, absl::string_view program, absl::string_view usage) {
  const sigset_t signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ProgramName() = std::string(program);
  absl::SetProgramUsageMessage(usage);
  CheckFlagsOrExit(argc, argv, usage);
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
