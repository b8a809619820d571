// demod-replay FILE...: replays golden runs of the reference DeMo optimizer through demod's
// optimizer and aggregation and prints one line per file with the measured errors.
// Exit status: 0 every file within tolerance, 1 one is not, 2 a file cannot be read or parsed.
#include <cstdio>

#include "worker/replay/replay.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: demod-replay GOLDEN.json...\n");
    return 2;
  }
  int exit_code = 0;
  for (int i = 1; i < argc; ++i) {
    absl::StatusOr<demod::GoldenRun> run = demod::ReadGoldenRun(argv[i]);
    if (!run.ok()) {
      std::fprintf(stderr, "demod-replay: %s\n", std::string(run.status().message()).c_str());
      return 2;
    }
    absl::StatusOr<demod::ReplayReport> report = demod::Replay(*run);
    if (!report.ok()) {
      std::fprintf(stderr, "demod-replay: %s: %s\n", argv[i],
                   std::string(report.status().message()).c_str());
      return 2;
    }
    std::printf("%s: %s\n", argv[i], report->Summary().c_str());
    if (!report->WithinTolerance()) exit_code = 1;
  }
  return exit_code;
}
