// What demod's programs share at their edges: flags parsing that refuses stray arguments, a
// one-line reason and an exit code on failure, and reading the small files flags name
// (tokens, certificates).
//
//   int main(int argc, char** argv) {
//     demod::ParseFlagsOrExit(argc, argv, "demod-worker", "demod-worker --coordinator ...");
//     if (bad) demod::ExitWithReason(demod::kExitUsage, "--steps must be >= 0");
//   }
//
// Not thread-safe before ParseFlagsOrExit returns; ExitWithReason may be called from any
// thread after.
#ifndef DEMOD_COMMON_PROGRAM_H_
#define DEMOD_COMMON_PROGRAM_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace demod {

// Exit codes of every demod program.
constexpr int kExitFailed = 1;  // could not do its job (start, train, reach a peer)
constexpr int kExitUsage = 2;   // bad flags, configuration or input files

// Parses absl flags; a positional argument exits with kExitUsage and names it. `program`
// prefixes every later ExitWithReason line. Also blocks SIGINT and SIGTERM in the calling
// thread, so every thread started later inherits the mask and the signals wait for
// OnStopSignal: call it first in main, before anything starts threads (LibTorch's OpenMP pool,
// gRPC), or a signal may land in such a thread and kill the process with no cleanup.
void ParseFlagsOrExit(int argc, char** argv, absl::string_view program, absl::string_view usage);

// Starts a thread that waits for SIGINT or SIGTERM and then calls `on_signal` (once) with it;
// a second such signal ends the process at once with kExitFailed.
void OnStopSignal(std::function<void(int signal)> on_signal);

// Has glibc's allocator serve blocks of up to 32 MiB from its heap, and keep up to 128 MiB of
// freed memory there, rather than map fresh pages for each large block and return them when
// it is freed. gRPC messages of up to a frame (1 MiB by default) are allocated and freed many
// times a second; with glibc's defaults the page faults of their fresh pages cost as much CPU
// as copying the bytes (measured in a parameter relay: docs/benchmarks.md). For programs only:
// a library must not set its host's allocator policy.
void KeepLargeBlocksInHeap();

// "<program>: <message>" on stderr, then exit(code).
[[noreturn]] void ExitWithReason(int code, absl::string_view message);

// The file's bytes, or ExitWithReason(kExitUsage, "cannot read the <what> file <path>").
std::string ReadFileOrExit(const std::string& path, absl::string_view what);

// Writes `contents` to `path` whole: a reader finds no file, or the old one, or all of the new
// one, never a part (it is written beside and renamed over), so another program waiting for
// the file may read it as soon as it exists. UNAVAILABLE "cannot write the <what> file <path>:
// <reason>" on error.
absl::Status WriteFileWhole(const std::string& path, absl::string_view contents,
                            absl::string_view what);

}  // namespace demod

#endif  // DEMOD_COMMON_PROGRAM_H_
