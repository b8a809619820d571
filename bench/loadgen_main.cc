// demod-loadgen: what the coordinator costs a synchronous DeMo step. It starts demod-coordinator
// as a child process, connects N synthetic workers to it over loopback (one thread and one
// CoordinatorClient each, the same client code demod-worker uses) and runs steps with no
// compute: every worker sends a pre-encoded payload at a common barrier and waits for the
// aggregate. Before that it measures raw loopback TCP in the same run, the physical reference
// the relay throughput is judged against.
//
//   build/bin/demod-loadgen --workers=2,8,32 --steps=20 --warmup=3
//
// Per N it prints one row of a markdown table (stdout); progress goes to stderr. Definitions:
//   t_start  the last worker arrived at the step's barrier (payloads are already encoded)
//   t_sent   the last worker's SendPayload returned
//   t_in     the coordinator took the step's last payload (the aggregate's frames say when, to
//            the microsecond, on the wall clock this program shares with it)
//   t_done   the last worker holds the whole aggregate
//   coordination latency = t_done - t_in; upload = t_sent - t_start; step wall = t_done - t_start
// MB are 10^6 bytes; byte counts are encoded payloads and aggregates (gRPC framing not counted).
//
// Links no LibTorch: it measures the coordinator, not the optimizer. Exit code 0 when every N
// ran; 1 with a one-line reason on stderr otherwise. The child is stopped on every path
// (SIGTERM, SIGKILL after 5 s; it also dies with this program's main thread).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/benchmark_gpt.h"
#include "bench/synthetic_selection.h"
#include "common/aggregation.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "common/program.h"
#include "common/status_macros.h"
#include "common/value_encoding.h"
#include "tests/support/synthetic_payload.h"
#include "worker/client/coordinator_client.h"

ABSL_FLAG(std::string, workers, "2,8,32", "comma-separated worker counts, one run each");
ABSL_FLAG(int, steps, 20, "measured steps per run");
ABSL_FLAG(int, warmup, 3, "steps run before measuring");
ABSL_FLAG(std::string, value_encoding, "bf16", "payload values: f32, bf16, f16 or sign");
ABSL_FLAG(int64_t, topk, 32, "coefficients each worker selects per chunk");
ABSL_FLAG(int64_t, chunk, 64, "target DCT chunk size");
ABSL_FLAG(int64_t, candidates_per_chunk, -1,
          "positions per chunk, shared by all workers for a step, that each worker draws its "
          "topk from (real selections correlate across workers); -1: 2 * topk; 0: the whole "
          "chunk (independent random selections, the worst case for the aggregate's size)");
ABSL_FLAG(std::string, coordinator, "",
          "demod-coordinator binary; default: the one next to this program");
ABSL_FLAG(int64_t, tcp_bytes, int64_t{1} << 30, "bytes sent for the raw loopback TCP reference");
ABSL_FLAG(int, tcp_repeats, 3,
          "raw TCP transfers; the fastest is the reference (on a shared machine the slower ones "
          "measure the neighbours)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the synthetic selections and values");
ABSL_FLAG(double, step_timeout_s, 120, "give up when a worker waits this long for an event");
ABSL_FLAG(bool, separate_connections, true,
          "give every worker its own TCP connection, as separate worker processes have: the "
          "coordinator listens on 0.0.0.0 (behind a random bearer token) and worker i connects "
          "to its own loopback address 127.0.x.y. gRPC shares one connection among the channels "
          "of a process that have the same target and arguments; false measures that");
ABSL_FLAG(std::string, state_dir, "",
          "give the coordinator a fresh state directory below this one "
          "(demod-loadgen-<pid>-<N>, removed after a successful run), so that each step includes "
          "the durable save a production coordinator makes (write, fsync, rename, fsync); "
          "default: none");
ABSL_FLAG(bool, per_step, false, "print every measured step's timings to stderr");
ABSL_FLAG(bool, verify_aggregates, true,
          "check every step's aggregate against the one computed here from the N payloads sent "
          "(each contribution counted once, none lost); outside the timed part of a step");
ABSL_FLAG(bool, keep_logs, false,
          "keep the coordinator's log (/tmp/demod-loadgen-<pid>-<N>.log) after a successful run; "
          "it is always kept after a failure");

namespace demod {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// This process's CPU time, all threads, user + system.
double OwnCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------------------------------------
// Raw loopback TCP: one connection, a sender thread writing 1 MiB buffers, this thread reading.

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Bytes per second over one loopback TCP connection.
absl::StatusOr<double> MeasureLoopbackTcp(int64_t total) {
  constexpr size_t kBlock = size_t{1} << 20;
  Fd listener(socket(AF_INET, SOCK_STREAM, 0));
  if (listener.get() < 0) return Errno("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listener.get(), 1) != 0 ||
      getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return Errno("loopback listener");
  }
  Fd sender(socket(AF_INET, SOCK_STREAM, 0));
  if (sender.get() < 0 ||
      connect(sender.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return Errno("loopback connect");
  }
  Fd receiver(accept(listener.get(), nullptr, nullptr));
  if (receiver.get() < 0) return Errno("loopback accept");

  const Clock::time_point start = Clock::now();
  std::thread writer([&sender, total] {
    const std::string block(kBlock, 'x');
    int64_t sent = 0;
    while (sent < total) {
      const size_t n = static_cast<size_t>(std::min<int64_t>(kBlock, total - sent));
      const ssize_t w = write(sender.get(), block.data(), n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;  // the reader sees the short count
      sent += w;
    }
    shutdown(sender.get(), SHUT_WR);
  });
  std::vector<char> buffer(kBlock);
  int64_t received = 0;
  while (received < total) {
    const ssize_t r = read(receiver.get(), buffer.data(), buffer.size());
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    received += r;
  }
  const double seconds = Seconds(Clock::now() - start);
  writer.join();
  if (received != total) {
    return absl::InternalError(
        absl::StrCat("loopback TCP: received ", received, " of ", total, " bytes"));
  }
  return total / seconds;
}

// ---------------------------------------------------------------------------------------------
// The coordinator as a child process.

struct ProcessSample {
  double cpu_seconds = 0;    // user + system, all threads
  int64_t rss_kib = 0;       // VmRSS
  int64_t peak_rss_kib = 0;  // VmHWM
};

class CoordinatorProcess {
 public:
  // Starts `binary args...` with stdout and stderr going to `log_path`.
  static absl::StatusOr<std::unique_ptr<CoordinatorProcess>> Start(
      const std::string& binary, const std::vector<std::string>& args,
      const std::string& log_path) {
    // Everything the child needs is built before fork: between fork and exec it may only make
    // system calls (gRPC threads of earlier runs may hold locks).
    std::vector<std::string> argv_storage = {binary};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log < 0) return Errno(absl::StrCat("cannot create ", log_path));
    const pid_t pid = fork();
    if (pid < 0) {
      close(log);
      return Errno("fork");
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphaned coordinator if this program dies
      const int null = open("/dev/null", O_RDONLY);
      if (null >= 0) dup2(null, STDIN_FILENO);
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(log);
    return std::unique_ptr<CoordinatorProcess>(new CoordinatorProcess(pid, log_path));
  }

  ~CoordinatorProcess() { (void)Stop(); }

  pid_t pid() const { return pid_; }

  // The gRPC port, from the file the coordinator writes once it serves (--port_file).
  absl::StatusOr<int> WaitForPort(const std::string& port_file, absl::Duration timeout) {
    const absl::Time give_up = absl::Now() + timeout;
    while (true) {
      std::ifstream in(port_file);
      int port = 0;
      if (in >> port && port > 0) return port;
      if (std::optional<std::string> exit = Reap(/*block=*/false); exit.has_value()) {
        const std::string last_line = LastLogLine();
        return absl::UnavailableError(absl::StrCat("the coordinator ", *exit, " before serving: ",
                                                   last_line.empty() ? "(no log)" : last_line));
      }
      if (absl::Now() > give_up) {
        return absl::DeadlineExceededError(absl::StrCat("the coordinator did not write ", port_file,
                                                        " within ", absl::FormatDuration(timeout)));
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  absl::StatusOr<ProcessSample> Sample() const {
    ProcessSample sample;
    // The process's CPU clock (user + system, all threads) in nanoseconds; /proc/<pid>/stat's
    // utime + stime count the same in 10 ms ticks, too coarse for a few milliseconds a step.
    clockid_t clock;
    timespec cpu;
    if (clock_getcpuclockid(pid_, &clock) != 0 || clock_gettime(clock, &cpu) != 0) {
      return absl::InternalError(absl::StrCat("cannot read the CPU clock of process ", pid_));
    }
    sample.cpu_seconds = cpu.tv_sec + cpu.tv_nsec * 1e-9;
    std::ifstream status(absl::StrCat("/proc/", pid_, "/status"));
    for (std::string line; std::getline(status, line);) {
      int64_t* field = line.rfind("VmHWM:", 0) == 0   ? &sample.peak_rss_kib
                       : line.rfind("VmRSS:", 0) == 0 ? &sample.rss_kib
                                                      : nullptr;
      if (field == nullptr) continue;
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() >= 2) (void)absl::SimpleAtoi(parts[1], field);
    }
    return sample;
  }

  // SIGTERM, then SIGKILL after 5 s. OK when the coordinator exited with status 0.
  absl::Status Stop() {
    if (exit_.has_value()) return Exited();
    kill(pid_, SIGTERM);
    const absl::Time kill_at = absl::Now() + absl::Seconds(5);
    while (!Reap(/*block=*/false).has_value()) {
      if (absl::Now() > kill_at) {
        kill(pid_, SIGKILL);
        Reap(/*block=*/true);
        break;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return Exited();
  }

  std::string LastLogLine() const {
    std::string log = ReadLog();
    while (!log.empty() && log.back() == '\n') log.pop_back();
    const size_t newline = log.rfind('\n');
    return newline == std::string::npos ? log : log.substr(newline + 1);
  }

  const std::string& log_path() const { return log_path_; }

 private:
  CoordinatorProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}

  std::string ReadLog() const {
    std::ifstream in(log_path_, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // How the child ended ("exited with status 3"), once it has; nullopt while it runs.
  std::optional<std::string> Reap(bool block) {
    if (exit_.has_value()) return exit_;
    int status = 0;
    pid_t r;
    do {
      r = waitpid(pid_, &status, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return std::nullopt;
    if (r < 0) {
      exit_ = "vanished";
    } else if (WIFEXITED(status)) {
      exit_code_ = WEXITSTATUS(status);
      exit_ = absl::StrCat("exited with status ", exit_code_);
    } else {
      exit_ = absl::StrCat("was killed by signal ", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    return exit_;
  }

  absl::Status Exited() const {
    if (exit_code_ == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("the coordinator ", *exit_, " (log: ", log_path_, ")"));
  }

  const pid_t pid_;
  const std::string log_path_;
  std::optional<std::string> exit_;
  int exit_code_ = -1;
};

// ---------------------------------------------------------------------------------------------
// Synthetic workers.

// All workers meet here before and after each step. The last to arrive runs `on_release` before
// anyone goes on, so it sees every worker at the barrier. Abort releases everyone with false.
class Barrier {
 public:
  explicit Barrier(int parties) : parties_(parties) {}

  bool ArriveAndWait(const std::function<void()>& on_release) {
    absl::MutexLock lock(&mu_);
    if (aborted_) return false;
    const int64_t generation = generation_;
    if (++waiting_ == parties_) {
      waiting_ = 0;
      ++generation_;
      if (on_release) on_release();
      return true;
    }
    const auto released = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return aborted_ || generation_ != generation;
    };
    mu_.Await(absl::Condition(&released));
    return generation_ != generation;
  }

  void Abort() {
    absl::MutexLock lock(&mu_);
    aborted_ = true;
  }

 private:
  absl::Mutex mu_;
  const int parties_;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
};

struct WorkerStep {
  uint64_t payload_bytes = 0;
  Clock::time_point sent;
  Clock::time_point done;
  absl::Time done_at;          // `done` on the wall clock, which the coordinator shares
  absl::Time last_payload_in;  // t_in, as the aggregate says
  uint64_t aggregate_bytes = 0;
  uint32_t aggregate_crc = 0;  // the aggregate's own trailing CRC-32C: equal bytes, equal CRC
};

struct RunSpec {
  int workers = 0;
  int warmup = 0;
  int steps = 0;
  int port = 0;
  bool separate_connections = true;
  std::string token;      // empty for none
  std::string state_dir;  // the parent of the coordinator's state directory; empty for none
  ValueEncoding encoding = ValueEncoding::kBFloat16;
  std::vector<TensorShape> shapes;
  LayoutTable table;
  int64_t candidates_per_chunk = 0;  // 0: the whole chunk
  std::string parameters;            // what donors send joiners: 4 bytes per parameter
  absl::Duration event_timeout;
  uint64_t seed = 0;
  bool verify_aggregates = true;
};

// What one run's worker threads share. The main thread waits for all of them to finish, or
// for the first failure, after which it stops the coordinator so that blocked workers return.
class Shared {
 public:
  Shared(const RunSpec& spec, const CoordinatorProcess* coordinator)
      : spec_(spec),
        coordinator_(coordinator),
        barrier_(spec.workers),
        steps_(spec.workers, std::vector<WorkerStep>(spec.warmup + spec.steps)),
        starts_(spec.warmup + spec.steps),
        candidate_random_(spec.seed),
        candidates_(DrawCandidates(spec.table, spec.candidates_per_chunk, candidate_random_)) {}

  const RunSpec& spec() const { return spec_; }
  Barrier& barrier() { return barrier_; }
  WorkerStep& step(int worker, int64_t step) { return steps_[worker][step - 1]; }
  Clock::time_point start(int64_t step) const { return starts_[step - 1]; }
  // The open step's candidates. Replaced only at the release of a step's closing barrier,
  // while every worker waits, and read only between that and the next opening barrier.
  const Candidates& candidates() const { return candidates_; }
  void DrawNextCandidates() {
    candidates_ = DrawCandidates(spec_.table, spec_.candidates_per_chunk, candidate_random_);
  }

  // Runs at the release of step `step`'s opening barrier.
  void StepStarts(int64_t step) {
    starts_[step - 1] = Clock::now();
    if (step == spec_.warmup + 1) measure_start_ = Measure();
    step_cpu_start_ = OwnCpuSeconds();
  }
  // Runs at the release of step `step`'s closing barrier, once every worker has the aggregate.
  void StepEnds(int64_t step) {
    if (step > spec_.warmup) workers_cpu_seconds_ += OwnCpuSeconds() - step_cpu_start_;
  }
  // This process's CPU time (the synthetic workers' and their gRPC threads') within the
  // measured steps: what the workers' side of the exchange costs on the shared CPUs.
  double workers_cpu_seconds() const { return workers_cpu_seconds_; }
  // Runs at the release of the last step's closing barrier.
  void MeasuredPhaseEnds() { measure_end_ = Measure(); }

  struct Measurement {
    Clock::time_point when;
    absl::StatusOr<ProcessSample> sample;
  };
  const Measurement& measure_start() const { return measure_start_; }
  const Measurement& measure_end() const { return measure_end_; }

  // The payloads sent for a step, by worker index, with the senders' ids: what
  // VerifyAggregate checks the coordinator's aggregate against. Two steps are kept, so the
  // next step's payloads never overwrite the ones being checked (a worker can be at most one
  // step ahead of another: the barriers).
  struct Sent {
    uint32_t worker_id = 0;
    std::string payload;
  };
  void Record(int index, int64_t step, uint32_t worker_id, const std::string& payload) {
    sent_[step % 2][index] = Sent{worker_id, payload};
  }
  const std::vector<Sent>& sent(int64_t step) const { return sent_[step % 2]; }

  // A parameter relay to `joiner` (donor -> coordinator -> joiner) starts as the donor begins
  // sending and ends when the joiner holds every byte.
  // CPU is counted from the first start to the last end, in both processes.
  void RelayStarts(uint32_t joiner) {
    absl::MutexLock lock(&mu_);
    if (relays_.empty()) relay_cpu_start_ = CpuNow();
    relays_[joiner].first = Clock::now();
  }
  void RelayEnds(uint32_t joiner) {
    absl::MutexLock lock(&mu_);
    relays_[joiner].second = Clock::now();
    relay_cpu_end_ = CpuNow();
  }
  // CPU seconds the relays took: {coordinator, this process (donors and joiners)}.
  std::pair<double, double> RelayCpuSeconds() const {
    absl::MutexLock lock(&mu_);
    return {relay_cpu_end_.first - relay_cpu_start_.first,
            relay_cpu_end_.second - relay_cpu_start_.second};
  }
  // The relays' total bytes over the time from the first start to the last end (relays may
  // overlap), and the median of each relay's own rate; 0 when there was none.
  std::pair<double, double> RelayBytesPerSecond() const {
    absl::MutexLock lock(&mu_);
    if (relays_.empty()) return {0, 0};
    Clock::time_point first = relays_.begin()->second.first, last = relays_.begin()->second.second;
    std::vector<double> rates;
    const auto bytes = static_cast<double>(spec_.parameters.size());
    for (const auto& [joiner, times] : relays_) {
      first = std::min(first, times.first);
      last = std::max(last, times.second);
      rates.push_back(bytes / Seconds(times.second - times.first));
    }
    std::sort(rates.begin(), rates.end());
    return {bytes * relays_.size() / Seconds(last - first), rates[(rates.size() - 1) / 2]};
  }

  // The seed joins first, so that its tensor table and parameters are the run's.
  void SeedJoined() {
    absl::MutexLock lock(&mu_);
    seed_joined_ = true;
  }
  bool WaitForSeed() {
    absl::MutexLock lock(&mu_);
    const auto go = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return seed_joined_ || !failure_.ok();
    };
    mu_.Await(absl::Condition(&go));
    return failure_.ok();
  }
  void Activated() {
    absl::MutexLock lock(&mu_);
    ++active_;
  }
  bool AllActive() const {
    absl::MutexLock lock(&mu_);
    return active_ == spec_.workers;
  }
  bool Failed() const {
    absl::MutexLock lock(&mu_);
    return !failure_.ok();
  }
  void Fail(const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (failure_.ok()) failure_ = status;
    }
    barrier_.Abort();
  }
  void WorkerDone() {
    absl::MutexLock lock(&mu_);
    ++done_;
  }
  // Waits for every worker to finish, or for the first failure; returns that failure.
  absl::Status Wait() {
    absl::MutexLock lock(&mu_);
    const auto over = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ == spec_.workers || !failure_.ok();
    };
    mu_.Await(absl::Condition(&over));
    return failure_;
  }

 private:
  Measurement Measure() const { return {Clock::now(), coordinator_->Sample()}; }
  // {coordinator's CPU seconds (0 when unreadable), this process's}.
  std::pair<double, double> CpuNow() const {
    absl::StatusOr<ProcessSample> sample = coordinator_->Sample();
    return {sample.ok() ? sample->cpu_seconds : 0, OwnCpuSeconds()};
  }

  const RunSpec& spec_;
  const CoordinatorProcess* const coordinator_;
  Barrier barrier_;
  // Each worker writes only its own row; the main thread reads after joining the threads.
  std::vector<std::vector<WorkerStep>> steps_;
  // Written by the barrier's last arriver; read after the threads are joined.
  std::vector<Clock::time_point> starts_;
  Measurement measure_start_;
  Measurement measure_end_;
  double step_cpu_start_ = 0;  // written and read by barrier completions only
  double workers_cpu_seconds_ = 0;
  std::vector<Sent> sent_[2] = {std::vector<Sent>(spec_.workers), std::vector<Sent>(spec_.workers)};
  std::mt19937_64 candidate_random_;
  Candidates candidates_;

  mutable absl::Mutex mu_;
  std::map<uint32_t, std::pair<Clock::time_point, Clock::time_point>> relays_ ABSL_GUARDED_BY(mu_);
  std::pair<double, double> relay_cpu_start_ ABSL_GUARDED_BY(mu_);
  std::pair<double, double> relay_cpu_end_ ABSL_GUARDED_BY(mu_);
  bool seed_joined_ ABSL_GUARDED_BY(mu_) = false;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  int done_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
};

absl::Status Unexpected(const ClientEvent& event, absl::string_view when) {
  return absl::InternalError(absl::StrCat(
      "unexpected '", ClientEventKindName(event.kind), "' event ", when,
      event.kind == ClientEvent::Kind::kEnded ? absl::StrCat(": ", event.status.ToString())
      : event.reason.empty()                  ? std::string()
                                              : absl::StrCat(": ", event.reason)));
}

// The aggregate of `step` must be exactly the one the N payloads sent make: every worker's
// contribution counted once, none lost, none from another step.
absl::Status VerifyAggregate(const RunSpec& spec, int64_t step,
                             const std::vector<Shared::Sent>& sent, const std::string& aggregate) {
  std::vector<StepPayload> payloads;
  payloads.reserve(sent.size());  // the contributions point into it
  std::vector<Contribution> contributions;
  for (const Shared::Sent& s : sent) {
    DEMOD_ASSIGN_OR_RETURN(StepPayload payload, DecodeStepPayload(s.payload, spec.table));
    payloads.push_back(std::move(payload));
    contributions.push_back({s.worker_id, &payloads.back()});
  }
  DEMOD_ASSIGN_OR_RETURN(std::string expected, AggregateStepEncoded(contributions, spec.table));
  if (expected != aggregate) {
    return absl::InternalError(absl::StrCat(
        "the aggregate of step ", step, " is not the aggregate of the ", sent.size(),
        " payloads sent (", aggregate.size(), " bytes, ", expected.size(), " expected)"));
  }
  return absl::OkStatus();
}

absl::Status RunWorker(int index, Shared& shared) {
  const RunSpec& spec = shared.spec();
  if (index > 0 && !shared.WaitForSeed()) return absl::CancelledError("another worker failed");
  ClientOptions options;
  options.target = spec.separate_connections
                       ? absl::StrCat("127.0.", index / 250, ".", 1 + index % 250, ":", spec.port)
                       : absl::StrCat("127.0.0.1:", spec.port);
  options.token = spec.token;
  options.join.set_worker_name(absl::StrCat("loadgen-", index));
  options.join.mutable_hardware()->set_device_kind(v1::DEVICE_KIND_CPU);
  options.join.mutable_hardware()->set_device_name("demod-loadgen (synthetic)");
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const TensorShape& t : spec.shapes) shapes.emplace_back(t.name, t.shape);
  *options.join.mutable_tensors() = TensorSpecsOf(shapes);
  DEMOD_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                         CoordinatorClient::Connect(std::move(options)));
  if (index == 0) shared.SeedJoined();

  // Joining: serve parameter requests for later joiners until every worker is active.
  bool active = false;
  while (!(active && shared.AllActive())) {
    if (shared.Failed()) return absl::CancelledError("another worker failed");
    absl::StatusOr<ClientEvent> event = client->Next(absl::Milliseconds(20));
    if (absl::IsDeadlineExceeded(event.status())) continue;
    if (!event.ok()) return event.status();
    switch (event->kind) {
      case ClientEvent::Kind::kSendState:
        // A transfer is pulled a window at a time; it starts with the first.
        if (event->state_offset == 0 && event->state_length > 0) shared.RelayStarts(event->joiner);
        DEMOD_RETURN_IF_ERROR(client->SendState(*event, /*step=*/0, spec.parameters));
        break;
      case ClientEvent::Kind::kState:
        if (event->bytes.size() != spec.parameters.size()) {
          return absl::InternalError(absl::StrCat("received ", event->bytes.size(),
                                                  " bytes of parameters, not ",
                                                  spec.parameters.size()));
        }
        shared.RelayEnds(client->welcome().worker_id());
        break;
      case ClientEvent::Kind::kPaused:
        break;
      case ClientEvent::Kind::kActive:
        if (event->step != 1) {
          return absl::InternalError(absl::StrCat("active from step ", event->step, ", not 1"));
        }
        active = true;
        shared.Activated();
        break;
      default:
        return Unexpected(*event, "while joining");
    }
  }

  std::mt19937_64 random(spec.seed * 1000003 + index);
  const int64_t total_steps = spec.warmup + spec.steps;
  for (int64_t step = 1; step <= total_steps; ++step) {
    // Not timed: the payload is ready before the barrier.
    DEMOD_ASSIGN_OR_RETURN(std::string payload,
                           EncodeStepPayload(SelectPayload(spec.table, shared.candidates(), step,
                                                           spec.encoding, random),
                                             spec.table));
    if (!shared.barrier().ArriveAndWait([&shared, step] { shared.StepStarts(step); })) {
      return absl::CancelledError("another worker failed");
    }
    WorkerStep& record = shared.step(index, step);
    record.payload_bytes = payload.size();
    if (spec.verify_aggregates) shared.Record(index, step, client->worker_id(), payload);
    DEMOD_RETURN_IF_ERROR(client->SendPayload(step, payload));
    record.sent = Clock::now();
    std::string aggregate;
    while (true) {
      DEMOD_ASSIGN_OR_RETURN(ClientEvent event, client->Next(spec.event_timeout));
      if (event.kind == ClientEvent::Kind::kAggregate && event.step == step) {
        record.done = Clock::now();
        record.done_at = absl::Now();
        record.last_payload_in = absl::FromUnixMicros(event.last_payload_unix_micros);
        aggregate = std::move(event.bytes);
        break;
      }
      return Unexpected(event, absl::StrCat("while waiting for the aggregate of step ", step));
    }
    // Everyone has the aggregate before anyone prepares the next step, so no worker's encode
    // competes for the CPUs with another's receive.
    const bool last = step == total_steps;
    if (!shared.barrier().ArriveAndWait([&shared, step, last] {
          shared.StepEnds(step);
          if (last) {
            shared.MeasuredPhaseEnds();
          } else {
            shared.DrawNextCandidates();
          }
        })) {
      return absl::CancelledError("another worker failed");
    }
    if (aggregate.size() < 4) return absl::InternalError("an aggregate of under 4 bytes");
    record.aggregate_bytes = aggregate.size();
    std::memcpy(&record.aggregate_crc, aggregate.data() + aggregate.size() - 4, 4);
    if (index == 0) {
      // One worker checks what the coordinator produced (format, CRC, table, contributors).
      DEMOD_ASSIGN_OR_RETURN(StepAggregate decoded, DecodeStepAggregate(aggregate, spec.table));
      if (decoded.step != step || static_cast<int>(decoded.contributors.size()) != spec.workers) {
        return absl::InternalError(absl::StrCat("the aggregate of step ", step, " is of step ",
                                                decoded.step, " with ", decoded.contributors.size(),
                                                " contributors"));
      }
      if (spec.verify_aggregates) {
        DEMOD_RETURN_IF_ERROR(VerifyAggregate(spec, step, shared.sent(step), aggregate));
      }
    }
  }
  // The run is over: the coordinator says so and ends the stream cleanly.
  for (ClientEvent::Kind expected : {ClientEvent::Kind::kFinished, ClientEvent::Kind::kEnded}) {
    DEMOD_ASSIGN_OR_RETURN(ClientEvent event, client->Next(spec.event_timeout));
    if (event.kind != expected || !event.status.ok()) {
      return Unexpected(event, "after the last step");
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// One run per worker count.

struct RunResult {
  int workers = 0;
  uint64_t payload_bytes = 0;  // per worker per step
  double aggregate_bytes = 0;  // mean over measured steps
  double latency_p50_ms = 0;
  double latency_p99_ms = 0;
  double wall_p50_ms = 0;
  double upload_p50_ms = 0;  // t_sent - t_start
  double transfer_ms = 0;    // one step's bytes at raw TCP speed
  double ingest_mb_s = 0;
  double relay_mb_s = 0;
  double relay_ratio = 0;  // relay / raw TCP
  double cpu_ms_per_step = 0;
  double cores_busy = 0;               // coordinator CPU seconds / sum of step walls
  double cores_phase = 0;              // coordinator CPU seconds / measured phase wall
  double workers_cpu_ms_per_step = 0;  // this process, within the measured steps
  double param_relay_mb_s = 0;         // N - 1 joiners' parameters, first start to last end
  double param_relay_median_mb_s = 0;  // one relay's own rate, the median
  double param_relay_coordinator_ns_per_byte = 0;  // CPU per relayed byte
  double param_relay_workers_ns_per_byte = 0;      // the donors' and joiners' CPU
  int64_t peak_rss_kib = 0;
  int64_t rss_warm_kib = 0;  // after the warm-up steps
  int64_t rss_end_kib = 0;   // after the last step
  int64_t verified_steps = 0;
};

// Nearest-rank percentile of a non-empty sample.
double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

absl::StatusOr<RunResult> RunOnce(RunSpec spec, const std::string& coordinator_binary,
                                  double tcp_bytes_per_s) {
  const int n = spec.workers;
  const std::string log_path = absl::StrCat("/tmp/demod-loadgen-", getpid(), "-", n, ".log");
  const std::string port_path = absl::StrCat("/tmp/demod-loadgen-", getpid(), "-", n, ".port");
  unlink(port_path.c_str());  // a leftover of an earlier process with this pid
  std::vector<std::string> args = {
      spec.separate_connections ? "--listen=0.0.0.0:0" : "--listen=127.0.0.1:0",
      "--metrics=",
      absl::StrCat("--port_file=", port_path),
      absl::StrCat("--run_id=loadgen-", n),
      absl::StrCat("--min_workers=", n),
      absl::StrCat("--max_workers=", std::max(n, 1)),
      absl::StrCat("--total_steps=", spec.warmup + spec.steps),
      "--step_deadline_s=120",
      "--heartbeat_timeout_s=120",
      absl::StrCat("--value_encoding=", ValueEncodingName(spec.encoding)),
      absl::StrCat("--topk=", absl::GetFlag(FLAGS_topk)),
      absl::StrCat("--chunk=", absl::GetFlag(FLAGS_chunk)),
      "--fingerprint_interval=0",
      "--log_level=info",
      // Stays up after the last step, so its CPU time and peak RSS can still be read.
      "--exit_when_finished=false",
  };
  std::string state_dir;
  if (!spec.state_dir.empty()) {
    state_dir = absl::StrCat(spec.state_dir, "/demod-loadgen-", getpid(), "-", n);
    args.push_back(absl::StrCat("--state_dir=", state_dir));
  }
  const std::string token_path = absl::StrCat("/tmp/demod-loadgen-", getpid(), "-", n, ".token");
  if (spec.separate_connections) {
    // Listening on every interface: only holders of the token can join.
    std::random_device device;
    spec.token = absl::StrFormat("%08x%08x%08x%08x", device(), device(), device(), device());
    const int fd = open(token_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, spec.token.data(), spec.token.size()) !=
                      static_cast<ssize_t>(spec.token.size())) {
      if (fd >= 0) close(fd);
      return Errno(absl::StrCat("cannot write ", token_path));
    }
    close(fd);
    args.push_back(absl::StrCat("--token_file=", token_path));
  }
  absl::StatusOr<std::unique_ptr<CoordinatorProcess>> started =
      CoordinatorProcess::Start(coordinator_binary, args, log_path);
  absl::StatusOr<int> port =
      started.ok() ? (*started)->WaitForPort(port_path, absl::Seconds(10)) : started.status();
  unlink(port_path.c_str());
  if (spec.separate_connections) unlink(token_path.c_str());  // read at start-up only
  if (!started.ok()) return started.status();
  std::unique_ptr<CoordinatorProcess> coordinator = *std::move(started);
  if (!port.ok()) {
    (void)coordinator->Stop();
    return absl::Status(port.status().code(),
                        absl::StrCat(port.status().message(), " (log: ", log_path, ")"));
  }
  spec.port = *port;
  std::fprintf(stderr, "N=%d: coordinator pid %d on port %d\n", n, coordinator->pid(), *port);

  Shared shared(spec, coordinator.get());
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([i, &shared] {
      absl::Status s = RunWorker(i, shared);
      if (!s.ok()) {
        shared.Fail(absl::Status(s.code(), absl::StrCat("worker ", i, ": ", s.message())));
      }
      shared.WorkerDone();
    });
  }
  absl::Status failure = shared.Wait();
  // On failure the coordinator goes first: ending the streams frees workers blocked in Next.
  absl::Status stopped = failure.ok() ? absl::OkStatus() : coordinator->Stop();
  for (std::thread& t : threads) t.join();
  if (failure.ok()) stopped = coordinator->Stop();
  if (!failure.ok()) {
    return absl::Status(failure.code(),
                        absl::StrCat("N=", n, ": ", failure.message(), " (coordinator log: ",
                                     log_path, ", last line: ", coordinator->LastLogLine(), ")"));
  }
  if (!stopped.ok()) return stopped;
  if (!state_dir.empty()) {
    std::error_code ignored;  // a leftover directory is harmless
    std::filesystem::remove_all(state_dir, ignored);
  }
  for (const Shared::Measurement* m : {&shared.measure_start(), &shared.measure_end()}) {
    if (!m->sample.ok()) return m->sample.status();
  }

  RunResult r;
  r.workers = n;
  std::vector<double> latencies, walls, uploads;
  double wall_sum = 0, upload = 0;
  for (int64_t step = spec.warmup + 1; step <= spec.warmup + spec.steps; ++step) {
    Clock::time_point sent = shared.step(0, step).sent, done = shared.step(0, step).done;
    absl::Time done_at = shared.step(0, step).done_at;
    for (int w = 0; w < n; ++w) {
      const WorkerStep& s = shared.step(w, step);
      const WorkerStep& first = shared.step(0, step);
      if (s.aggregate_bytes != first.aggregate_bytes || s.aggregate_crc != first.aggregate_crc) {
        return absl::InternalError(absl::StrCat("N=", n, ": workers 0 and ", w,
                                                " received different aggregates for step ", step));
      }
      upload += s.payload_bytes;
      sent = std::max(sent, s.sent);
      done = std::max(done, s.done);
      done_at = std::max(done_at, s.done_at);
    }
    const absl::Time in = shared.step(0, step).last_payload_in;
    if (in == absl::UnixEpoch()) {
      return absl::InternalError(
          absl::StrCat("N=", n, ": the aggregate of step ", step,
                       " does not say when its last "
                       "payload arrived (a coordinator older than this program?)"));
    }
    latencies.push_back(absl::ToDoubleMilliseconds(done_at - in));
    const double wall = Seconds(done - shared.start(step));
    walls.push_back(wall * 1e3);
    uploads.push_back(Seconds(sent - shared.start(step)) * 1e3);
    if (absl::GetFlag(FLAGS_per_step)) {
      std::fprintf(stderr, "N=%d step %lld: upload %.3f ms, latency %.3f ms, wall %.3f ms\n", n,
                   static_cast<long long>(step), uploads.back(), latencies.back(), walls.back());
    }
    wall_sum += wall;
    r.aggregate_bytes += shared.step(0, step).aggregate_bytes;
  }
  r.aggregate_bytes /= spec.steps;
  // Every payload of a run has the same size (topk entries per chunk, one value encoding).
  r.payload_bytes = shared.step(0, spec.warmup + 1).payload_bytes;
  const double download = r.aggregate_bytes * n * spec.steps;
  r.latency_p50_ms = Percentile(latencies, 50);
  r.latency_p99_ms = Percentile(latencies, 99);
  r.wall_p50_ms = Percentile(walls, 50);
  r.upload_p50_ms = Percentile(uploads, 50);
  r.transfer_ms =
      (static_cast<double>(r.payload_bytes) + r.aggregate_bytes) * n / tcp_bytes_per_s * 1e3;
  r.ingest_mb_s = upload / wall_sum / 1e6;
  r.relay_mb_s = (upload + download) / wall_sum / 1e6;
  r.relay_ratio = (upload + download) / wall_sum / tcp_bytes_per_s;
  const double cpu =
      shared.measure_end().sample->cpu_seconds - shared.measure_start().sample->cpu_seconds;
  r.cpu_ms_per_step = cpu / spec.steps * 1e3;
  r.cores_busy = cpu / wall_sum;
  r.cores_phase = cpu / Seconds(shared.measure_end().when - shared.measure_start().when);
  r.workers_cpu_ms_per_step = shared.workers_cpu_seconds() / spec.steps * 1e3;
  std::tie(r.param_relay_mb_s, r.param_relay_median_mb_s) = shared.RelayBytesPerSecond();
  r.param_relay_mb_s /= 1e6;
  r.param_relay_median_mb_s /= 1e6;
  const auto [relay_cpu_coordinator, relay_cpu_workers] = shared.RelayCpuSeconds();
  const double relayed = static_cast<double>(spec.parameters.size()) * (n - 1);
  r.param_relay_coordinator_ns_per_byte = relay_cpu_coordinator / relayed * 1e9;
  r.param_relay_workers_ns_per_byte = relay_cpu_workers / relayed * 1e9;
  r.peak_rss_kib = shared.measure_end().sample->peak_rss_kib;
  r.rss_warm_kib = shared.measure_start().sample->rss_kib;
  r.rss_end_kib = shared.measure_end().sample->rss_kib;
  r.verified_steps = spec.verify_aggregates ? spec.warmup + spec.steps : 0;
  if (!absl::GetFlag(FLAGS_keep_logs)) unlink(log_path.c_str());
  return r;
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::string> CoordinatorBinary() {
  std::string path = absl::GetFlag(FLAGS_coordinator);
  if (path.empty()) {
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return Errno("readlink /proc/self/exe");
    const std::string exe(self, n);
    path = exe.substr(0, exe.rfind('/') + 1) + "demod-coordinator";
  }
  if (access(path.c_str(), X_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat("coordinator not found: ", path, " is not an executable (--coordinator)"));
  }
  return path;
}

absl::StatusOr<std::vector<int>> ParseWorkerCounts(absl::string_view text) {
  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers: '", part, "' is not a worker count >= 1"));
    }
    counts.push_back(n);
  }
  if (counts.empty()) return absl::InvalidArgumentError("--workers is empty");
  return counts;
}

absl::Status Main() {
  DEMOD_ASSIGN_OR_RETURN(std::vector<int> counts, ParseWorkerCounts(absl::GetFlag(FLAGS_workers)));
  DEMOD_ASSIGN_OR_RETURN(std::string binary, CoordinatorBinary());
  DEMOD_ASSIGN_OR_RETURN(ValueEncoding encoding,
                         ParseValueEncoding(absl::GetFlag(FLAGS_value_encoding)));
  const int steps = absl::GetFlag(FLAGS_steps), warmup = absl::GetFlag(FLAGS_warmup);
  if (steps < 1 || warmup < 0) {
    return absl::InvalidArgumentError("--steps must be >= 1 and --warmup >= 0");
  }
  const int64_t topk = absl::GetFlag(FLAGS_topk);
  int64_t per_chunk = absl::GetFlag(FLAGS_candidates_per_chunk);
  if (per_chunk < -1) return absl::InvalidArgumentError("--candidates_per_chunk must be >= -1");
  if (per_chunk == -1) per_chunk = 2 * topk;

  RunSpec spec;
  spec.warmup = warmup;
  spec.steps = steps;
  spec.encoding = encoding;
  spec.shapes = BenchmarkGptShapes();
  DEMOD_ASSIGN_OR_RETURN(spec.table,
                         MakeLayoutTable(spec.shapes, absl::GetFlag(FLAGS_chunk), topk));
  spec.seed = absl::GetFlag(FLAGS_seed);
  spec.verify_aggregates = absl::GetFlag(FLAGS_verify_aggregates);
  spec.separate_connections = absl::GetFlag(FLAGS_separate_connections);
  spec.state_dir = absl::GetFlag(FLAGS_state_dir);
  spec.event_timeout = absl::Seconds(absl::GetFlag(FLAGS_step_timeout_s));
  spec.candidates_per_chunk = per_chunk;
  const int64_t parameters = TotalElements(spec.table);
  spec.parameters.assign(static_cast<size_t>(parameters) * 4, '\0');

  const int64_t tcp_bytes = absl::GetFlag(FLAGS_tcp_bytes);
  double tcp = 0;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_tcp_repeats)); ++i) {
    const double cpu_before = OwnCpuSeconds();
    DEMOD_ASSIGN_OR_RETURN(double once, MeasureLoopbackTcp(tcp_bytes));
    std::fprintf(stderr,
                 "raw loopback TCP: %.0f MB/s (%lld bytes, 1 MiB writes; %.2f ns CPU/byte)\n",
                 once / 1e6, static_cast<long long>(tcp_bytes),
                 (OwnCpuSeconds() - cpu_before) / static_cast<double>(tcp_bytes) * 1e9);
    tcp = std::max(tcp, once);
  }

  std::vector<RunResult> results;
  for (int n : counts) {
    spec.workers = n;
    DEMOD_ASSIGN_OR_RETURN(RunResult r, RunOnce(spec, binary, tcp));
    std::fprintf(stderr, "N=%d: p50 %.2f ms, relay %.0f MB/s\n", n, r.latency_p50_ms, r.relay_mb_s);
    results.push_back(r);
  }

  const std::string candidates = per_chunk == 0 ? "all" : absl::StrCat(per_chunk);
  std::printf(
      "demod-loadgen: %lld parameters in %zu tensors, chunk %lld, topk %lld, %s values, "
      "candidates per chunk %s; %d warm-up + %d measured steps; raw loopback TCP %.0f MB/s (best "
      "of %d)\n\n",
      static_cast<long long>(parameters), spec.table.size(),
      static_cast<long long>(absl::GetFlag(FLAGS_chunk)), static_cast<long long>(topk),
      std::string(ValueEncodingName(encoding)).c_str(), candidates.c_str(), warmup, steps,
      tcp / 1e6, std::max(1, absl::GetFlag(FLAGS_tcp_repeats)));
  std::printf(
      "| N | payload/worker | aggregate | transfer @TCP | latency p50 | latency p99 | "
      "2 ms + transfer | upload p50 | step wall p50 | ingest | relay | relay/TCP | coord CPU/step "
      "| coord cores (steps / phase) | coord RSS warm -> end (peak) | workers CPU/step | "
      "aggregates verified |\n");
  std::printf("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const RunResult& r : results) {
    std::printf(
        "| %d | %.1f KB | %.1f KB | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | "
        "%.0f MB/s | "
        "%.0f MB/s | %.1f%% | %.2f ms | %.2f / %.2f | %.1f -> %.1f (%.1f) MiB | %.2f ms | %lld |\n",
        r.workers, r.payload_bytes / 1e3, r.aggregate_bytes / 1e3, r.transfer_ms, r.latency_p50_ms,
        r.latency_p99_ms, 2.0 + r.transfer_ms, r.upload_p50_ms, r.wall_p50_ms, r.ingest_mb_s,
        r.relay_mb_s, r.relay_ratio * 100, r.cpu_ms_per_step, r.cores_busy, r.cores_phase,
        r.rss_warm_kib / 1024.0, r.rss_end_kib / 1024.0, r.peak_rss_kib / 1024.0,
        r.workers_cpu_ms_per_step, static_cast<long long>(r.verified_steps));
  }
  // The parameter relays that brought the N - 1 joiners in, donor -> coordinator -> joiner.
  std::printf(
      "\nParameter relays (%.1f MB each, frames of at most 1 MiB):\n\n"
      "| N | relays | all relays | all/TCP | one relay (median) | one/TCP | coord CPU/byte | "
      "donors + joiners CPU/byte |\n"
      "|--:|--:|--:|--:|--:|--:|--:|--:|\n",
      static_cast<double>(spec.parameters.size()) / 1e6);
  for (const RunResult& r : results) {
    if (r.workers < 2) continue;
    std::printf("| %d | %d | %.0f MB/s | %.1f%% | %.0f MB/s | %.1f%% | %.2f ns | %.2f ns |\n",
                r.workers, r.workers - 1, r.param_relay_mb_s, r.param_relay_mb_s * 1e6 / tcp * 100,
                r.param_relay_median_mb_s, r.param_relay_median_mb_s * 1e6 / tcp * 100,
                r.param_relay_coordinator_ns_per_byte, r.param_relay_workers_ns_per_byte);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "demod-loadgen [--workers=2,8,32] [--steps=20] [--warmup=3] [--value_encoding=bf16] "
      "[--candidates_per_chunk=-1] [--coordinator=PATH]: coordinator latency and throughput "
      "with synthetic workers over loopback");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "demod-loadgen: unexpected argument '%s'\n", positional[1]);
    return 1;
  }
  // The synthetic workers run with the allocator policy demod-worker has.
  demod::KeepLargeBlocksInHeap();
  // A worker whose stream broke must not take the process down with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  absl::Status status = demod::Main();
  if (!status.ok()) {
    std::fprintf(stderr, "demod-loadgen: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
