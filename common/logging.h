// One-line, timestamped log records on stderr, filtered by a process-wide level. Debian's
// Abseil (20220623) predates absl/log, so this is the project's small replacement.
//
//   Log(LogLevel::kInfo, absl::StrCat("step ", step, " closed"));
//
// Thread-safe: each record is written with one write(2).
#ifndef DEMOD_COMMON_LOGGING_H_
#define DEMOD_COMMON_LOGGING_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace demod {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kLast = kError };

// "debug", "info", "warning", "error"; INVALID_ARGUMENT naming the accepted ones otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void Log(LogLevel level, absl::string_view message);

}  // namespace demod

#endif  // DEMOD_COMMON_LOGGING_H_
