// demod-link-bridge: a slow wide-area link between two network namespaces, for
// scripts/shaped_link.sh ("On a slow link", docs/benchmarks.md). The kernels we run on have no
// netem and load no modules, so delay is made in user space: this program opens two TAP
// devices (IFF_TAP | IFF_NO_PI), creating them in its network namespace if they do not exist,
// and forwards every Ethernet frame read from one to the other, both directions, each frame
// written --delay_ms after it was read (one-way delay). With --rate_mbit each direction is also
// a serial line of that rate ahead of the delay (a frame is written after its predecessors'
// serialization, its own, and the delay), so a run can shape without tc; 0 leaves the rate to
// tbf on the devices, as the script does.
//
//   demod-link-bridge --tap_a=dmlc1 --tap_b=dmlw1 --delay_ms=20 --stats=s.json --ready_file=r &
//   ip link set dmlc1 netns NS_A; ip link set dmlw1 netns NS_B   # the open devices follow
//
// Contract:
//   - Order is kept per direction: one FIFO each, released in order of reading (the release
//     time only grows within a direction). Frames are written whole, one per write(2).
//   - Bounded: a direction holds at most --queue_frames frames and --queue_bytes bytes, and
//     with --rate_mbit at most --rate_queue_ms of serialization not yet begun (as tbf's
//     latency); a frame over a bound is dropped and counted, as a router's full queue would.
//     A write that fails (the device is down, its queue full) loses the frame and is counted.
//   - Counted per direction (a_to_b: read from tap_a, written to tap_b): frames and bytes
//     written ("bytes on the wire": whole Ethernet frames, header included, no preamble, FCS or
//     gap), frames and bytes dropped, failed writes; and its own CPU time. --stats receives
//     them as one line of JSON, replaced whole (common/program.h WriteFileWhole): every
//     --report_interval_s when set, and at exit.
//   - SIGUSR1 writes --stats at once (a benchmark's snapshot, say once its joins are done).
//   - --ready_file is written (whole) once both devices are open: then they may be moved into
//     other namespaces (`ip link set DEV netns NS`); the open descriptors stay attached.
//   - The devices it created vanish when it exits (they are not persistent); devices made
//     with `ip tuntap add` are attached to and left in place.
//   - SIGTERM, SIGINT or SIGHUP (or, with --exit_with_parent, its parent's death, which the
//     kernel turns into SIGTERM) ends it with exit 0, after the final --stats. A device that
//     is removed under it (its namespace deleted) ends it with exit 1. Bad flags exit 2, a
//     device that cannot be opened (not CAP_NET_ADMIN, no /dev/net/tun) 1, each with one line
//     on stderr.
//   - One thread; between frames it sleeps in ppoll(2) until the next frame is due (timed on
//     CLOCK_MONOTONIC, to the microsecond, scheduling aside), so an idle link costs no CPU.
// Links no LibTorch and no demod library but demod_program (flags, exit codes, whole files).

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/program.h"

ABSL_FLAG(std::string, tap_a, "", "first TAP device's name (created when it does not exist)");
ABSL_FLAG(std::string, tap_b, "", "second TAP device's name");
ABSL_FLAG(double, delay_ms, 0, "one-way delay in milliseconds, each direction (0..60000)");
ABSL_FLAG(double, rate_mbit, 0,
          "each direction's rate in Mbit/s (10^6 bits) of Ethernet frames; 0: unlimited (shape "
          "with tbf instead)");
ABSL_FLAG(int64_t, queue_frames, 10000, "most frames a direction holds; more are dropped");
ABSL_FLAG(int64_t, queue_bytes, 64 << 20, "most bytes a direction holds; more are dropped");
ABSL_FLAG(double, rate_queue_ms, 50,
          "with --rate_mbit: most serialization time a direction's backlog may hold (tbf's "
          "latency); a frame beyond it is dropped");
ABSL_FLAG(std::string, stats, "", "file for the counters (one line of JSON); empty: none");
ABSL_FLAG(double, report_interval_s, 0, "also write --stats this often; 0: only at exit");
ABSL_FLAG(std::string, ready_file, "", "written once both devices are open; empty: none");
ABSL_FLAG(bool, exit_with_parent, true,
          "exit (as on SIGTERM) when the process that started it dies, so a killed benchmark "
          "leaves no bridge behind");

namespace demod {
namespace {

constexpr int64_t kNanosPerSecond = 1000000000;
// Larger than any frame a TAP device hands out (its MTU is at most 65535, plus the header).
constexpr size_t kMaxFrameBytes = 65536 + 64;
// Frames read from one device per wakeup before the other gets its turn: enough to drain a
// burst in few ppoll calls, few enough that a flood one way does not delay the other.
constexpr int kReadBatch = 64;

int64_t NowNanos() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * kNanosPerSecond + now.tv_nsec;
}

struct Frame {
  int64_t release_ns;  // when it is written to the far device
  std::string bytes;
};

struct Counters {
  uint64_t frames = 0;  // written
  uint64_t bytes = 0;
  uint64_t dropped_frames = 0;  // over a queue bound
  uint64_t dropped_bytes = 0;
  uint64_t write_errors = 0;  // lost at the far device
};

// One way through the link: frames read from `in`, held, then written to `out`.
struct Direction {
  std::string name;  // a_to_b or b_to_a
  int in = -1;
  int out = -1;
  std::deque<Frame> queue;
  size_t queued_bytes = 0;
  // With a rate: when the serial line finishes the frames it holds (it is free from then).
  int64_t line_free_ns = 0;
  Counters counters;
};

struct Limits {
  int64_t delay_ns = 0;
  double nanos_per_byte = 0;  // 0: no rate
  size_t queue_frames = 0;
  size_t queue_bytes = 0;
  int64_t rate_queue_ns = 0;
};

// Opens (creating if needed) TAP device `name`, non-blocking; exits kExitFailed if it cannot.
int OpenTapOrExit(const std::string& name) {
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ExitWithReason(kExitFailed, absl::StrCat("cannot open /dev/net/tun: ", std::strerror(errno)));
  }
  ifreq request;
  std::memset(&request, 0, sizeof(request));
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::memcpy(request.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &request) != 0) {
    const int error = errno;
    ExitWithReason(kExitFailed, absl::StrCat("cannot open TAP device ", name,
                                             " (TUNSETIFF): ", std::strerror(error),
                                             error == EPERM ? " (needs CAP_NET_ADMIN)" : ""));
  }
  return fd;
}

// Reads what `d.in` has (at most kReadBatch frames) into d's queue. False when the device is
// gone (removed, or its namespace deleted).
bool ReadFrames(Direction& d, const Limits& limits, std::string& buffer) {
  for (int i = 0; i < kReadBatch; ++i) {
    const ssize_t n = read(d.in, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      // EIO: the device is down (it is while being moved between namespaces): nothing to read.
      if (errno == EAGAIN || errno == EIO) return true;
      return errno != EBADFD && errno != ENODEV;
    }
    if (n == 0) return true;
    const size_t size = static_cast<size_t>(n);
    const int64_t now = NowNanos();
    int64_t sent_ns = now;  // when the frame's last bit leaves the serial line
    if (limits.nanos_per_byte > 0) {
      const int64_t line_start = std::max(now, d.line_free_ns);
      if (line_start - now > limits.rate_queue_ns) {
        ++d.counters.dropped_frames;
        d.counters.dropped_bytes += size;
        continue;
      }
      sent_ns = line_start + static_cast<int64_t>(limits.nanos_per_byte * size);
    }
    if (d.queue.size() >= limits.queue_frames || d.queued_bytes + size > limits.queue_bytes) {
      ++d.counters.dropped_frames;
      d.counters.dropped_bytes += size;
      continue;
    }
    if (limits.nanos_per_byte > 0) d.line_free_ns = sent_ns;
    d.queue.push_back(Frame{sent_ns + limits.delay_ns, std::string(buffer.data(), size)});
    d.queued_bytes += size;
  }
  return true;
}

// Writes every frame of d's queue that is due at `now`.
void ReleaseFrames(Direction& d, int64_t now) {
  while (!d.queue.empty() && d.queue.front().release_ns <= now) {
    const std::string& bytes = d.queue.front().bytes;
    ssize_t n;
    do {
      n = write(d.out, bytes.data(), bytes.size());
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(bytes.size())) {
      ++d.counters.frames;
      d.counters.bytes += bytes.size();
    } else {
      ++d.counters.write_errors;  // the far device is down or full: lost, as on a wire
    }
    d.queued_bytes -= bytes.size();
    d.queue.pop_front();
  }
}

std::string StatsJson(const Direction (&directions)[2], int64_t started_ns, bool final) {
  std::string json = "{";
  for (const Direction& d : directions) {
    absl::StrAppendFormat(&json,
                          "\"%s_frames\":%d,\"%s_bytes\":%d,\"%s_dropped_frames\":%d,"
                          "\"%s_dropped_bytes\":%d,\"%s_write_errors\":%d,\"%s_queued_frames\":%d,",
                          d.name, d.counters.frames, d.name, d.counters.bytes, d.name,
                          d.counters.dropped_frames, d.name, d.counters.dropped_bytes, d.name,
                          d.counters.write_errors, d.name, d.queue.size());
  }
  // Its own CPU time: at high rates the bridge is one more process competing with the run's.
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                       (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
  absl::StrAppendFormat(
      &json, "\"delay_ms\":%g,\"rate_mbit\":%g,\"elapsed_s\":%.3f,\"cpu_s\":%.3f,\"final\":%s}\n",
      absl::GetFlag(FLAGS_delay_ms), absl::GetFlag(FLAGS_rate_mbit),
      static_cast<double>(NowNanos() - started_ns) / kNanosPerSecond, cpu_s,
      final ? "true" : "false");
  return json;
}

void WriteStats(const Direction (&directions)[2], int64_t started_ns, bool final) {
  const std::string path = absl::GetFlag(FLAGS_stats);
  if (path.empty()) return;
  absl::Status written = WriteFileWhole(path, StatsJson(directions, started_ns, final), "stats");
  // A full disk must not stop the link mid-run; the final write's failure is the exit code's.
  if (!written.ok()) std::fprintf(stderr, "demod-link-bridge: %s\n", written.ToString().c_str());
}

// Consumes the signals pending on `signal_fd`; true if one of them asks to stop (all but
// SIGUSR1).
bool StopRequested(int signal_fd) {
  bool stop = false;
  signalfd_siginfo info;
  while (read(signal_fd, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
    if (info.ssi_signo != SIGUSR1) stop = true;
  }
  return stop;
}

void CheckFlagsOrExit() {
  for (const std::string& name : {absl::GetFlag(FLAGS_tap_a), absl::GetFlag(FLAGS_tap_b)}) {
    if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
      ExitWithReason(kExitUsage, absl::StrCat("--tap_a and --tap_b need device names of 1 to ",
                                              IFNAMSIZ - 1, " characters, got '", name, "'"));
    }
  }
  if (absl::GetFlag(FLAGS_tap_a) == absl::GetFlag(FLAGS_tap_b)) {
    ExitWithReason(kExitUsage, "--tap_a and --tap_b must differ");
  }
  const double delay = absl::GetFlag(FLAGS_delay_ms);
  if (!(delay >= 0 && delay <= 60000)) {
    ExitWithReason(kExitUsage, absl::StrCat("--delay_ms must be in [0, 60000], got ", delay));
  }
  const double rate = absl::GetFlag(FLAGS_rate_mbit);
  if (!(rate >= 0 && rate <= 1e6)) {
    ExitWithReason(kExitUsage, absl::StrCat("--rate_mbit must be in [0, 1e6], got ", rate));
  }
  if (absl::GetFlag(FLAGS_queue_frames) < 1 || absl::GetFlag(FLAGS_queue_bytes) < 1) {
    ExitWithReason(kExitUsage, "--queue_frames and --queue_bytes must be >= 1");
  }
  if (!(absl::GetFlag(FLAGS_rate_queue_ms) >= 0)) {
    ExitWithReason(kExitUsage, "--rate_queue_ms must be >= 0");
  }
  const double interval = absl::GetFlag(FLAGS_report_interval_s);
  if (!(interval >= 0 && interval <= 1e6)) {
    ExitWithReason(kExitUsage, "--report_interval_s must be in [0, 1e6]");
  }
}

int Main() {
  CheckFlagsOrExit();
  // ParseFlagsOrExit blocked SIGINT and SIGTERM; SIGHUP and SIGUSR1 too, and all four arrive
  // on a descriptor ppoll watches with the devices, so a signal is handled between frames,
  // never within.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR1);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  const int signal_fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    ExitWithReason(kExitFailed, absl::StrCat("signalfd: ", std::strerror(errno)));
  }
  if (absl::GetFlag(FLAGS_exit_with_parent)) {
    const pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) return 0;  // it died before the request took effect
  }

  Limits limits;
  limits.delay_ns = static_cast<int64_t>(absl::GetFlag(FLAGS_delay_ms) * 1e6);
  const double rate = absl::GetFlag(FLAGS_rate_mbit);
  limits.nanos_per_byte = rate > 0 ? 8e3 / rate : 0;  // 8 bits at rate x 10^6 bit/s, in ns
  limits.queue_frames = static_cast<size_t>(absl::GetFlag(FLAGS_queue_frames));
  limits.queue_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_queue_bytes));
  limits.rate_queue_ns = static_cast<int64_t>(absl::GetFlag(FLAGS_rate_queue_ms) * 1e6);

  const int tap_a = OpenTapOrExit(absl::GetFlag(FLAGS_tap_a));
  const int tap_b = OpenTapOrExit(absl::GetFlag(FLAGS_tap_b));
  Direction directions[2];
  directions[0].name = "a_to_b";
  directions[0].in = tap_a;
  directions[0].out = tap_b;
  directions[1].name = "b_to_a";
  directions[1].in = tap_b;
  directions[1].out = tap_a;
  const int64_t started = NowNanos();
  if (!absl::GetFlag(FLAGS_ready_file).empty()) {
    absl::Status ready = WriteFileWhole(absl::GetFlag(FLAGS_ready_file), "ready\n", "ready");
    if (!ready.ok()) ExitWithReason(kExitFailed, ready.message());
  }
  WriteStats(directions, started, false);

  const int64_t interval =
      static_cast<int64_t>(absl::GetFlag(FLAGS_report_interval_s) * kNanosPerSecond);
  int64_t next_report = interval > 0 ? started + interval : std::numeric_limits<int64_t>::max();
  std::string buffer(kMaxFrameBytes, '\0');
  int exit_code = 0;
  while (true) {
    const int64_t now = NowNanos();
    for (Direction& d : directions) ReleaseFrames(d, now);
    if (now >= next_report) {
      WriteStats(directions, started, false);
      next_report = now + interval;
    }
    int64_t wake = next_report;
    for (const Direction& d : directions) {
      if (!d.queue.empty()) wake = std::min(wake, d.queue.front().release_ns);
    }
    timespec timeout;
    timespec* timeout_ptr = nullptr;  // none due: sleep until a frame or a signal arrives
    if (wake != std::numeric_limits<int64_t>::max()) {
      const int64_t wait = std::max<int64_t>(0, wake - NowNanos());
      timeout.tv_sec = wait / kNanosPerSecond;
      timeout.tv_nsec = wait % kNanosPerSecond;
      timeout_ptr = &timeout;
    }
    pollfd fds[3] = {{tap_a, POLLIN, 0}, {tap_b, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    if (ppoll(fds, 3, timeout_ptr, nullptr) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "demod-link-bridge: ppoll: %s\n", std::strerror(errno));
      exit_code = kExitFailed;
      break;
    }
    if (fds[2].revents & POLLIN) {
      if (StopRequested(signal_fd)) break;
      WriteStats(directions, started, false);  // SIGUSR1: a snapshot
    }
    bool gone = false;
    for (int i = 0; i < 2; ++i) {
      // POLLERR: the device was unregistered (its namespace deleted).
      if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) gone = true;
      if ((fds[i].revents & POLLIN) && !ReadFrames(directions[i], limits, buffer)) gone = true;
    }
    if (gone) {
      std::fprintf(stderr, "demod-link-bridge: a TAP device went away; stopping\n");
      exit_code = kExitFailed;
      break;
    }
  }
  WriteStats(directions, started, true);
  return exit_code;
}

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  demod::ParseFlagsOrExit(
      argc, argv, "demod-link-bridge",
      "demod-link-bridge --tap_a=DEV --tap_b=DEV [--delay_ms=20] [--rate_mbit=0] "
      "[--stats=FILE] [--report_interval_s=0] [--ready_file=FILE]: forwards Ethernet frames "
      "between two TAP devices, delayed (and rate-limited), counting bytes on the wire");
  return demod::Main();
}
