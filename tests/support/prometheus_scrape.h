// Scraping and linting a Prometheus endpoint from tests: a plain-socket HTTP GET, one sample
// out of an exposition, and `promtool check metrics` (installed by scripts/setup.sh).
#ifndef DEMOD_TESTS_SUPPORT_PROMETHEUS_SCRAPE_H_
#define DEMOD_TESTS_SUPPORT_PROMETHEUS_SCRAPE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace demod {

// GET http://127.0.0.1:<port><path> with HTTP/1.0; the body, or an error naming what failed.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// The value of the sample whose name-and-labels part is exactly `series`
// (e.g. `demod_tokens_total{worker="a"}`), if the exposition has it.
std::optional<double> Sample(const std::string& exposition, const std::string& series);

// The program's path on PATH (or /usr/bin, /usr/local/bin).
std::optional<std::string> FindProgram(const std::string& name);

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// `promtool check metrics < exposition`.
CommandResult PromtoolCheckMetrics(const std::string& promtool, const std::string& exposition);

}  // namespace demod

#endif  // DEMOD_TESTS_SUPPORT_PROMETHEUS_SCRAPE_H_
