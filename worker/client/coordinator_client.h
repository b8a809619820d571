// A worker's connection to the coordinator: one Train stream (proto/demod/v1/coordinator.proto)
// behind a small blocking API. Connect joins and returns once the Welcome has arrived; then the
// worker sends payloads, reports, fingerprints and parameters for joiners, and takes what the
// coordinator sends as events, in stream order, with aggregate and parameter frames already
// put back together.
//
// It holds no LibTorch (demod_client links only gRPC and common/), so synthetic workers in
// tests and demod-loadgen speak the protocol through the same code as demod-worker.
//
// Heartbeats are sent on their own whenever the worker has written nothing for the run's
// heartbeat interval. Thread-safe: sends may come from any thread; Next from one at a time.
#ifndef DEMOD_WORKER_CLIENT_COORDINATOR_CLIENT_H_
#define DEMOD_WORKER_CLIENT_COORDINATOR_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/frame_assembler.h"
#include "demod/v1/coordinator.grpc.pb.h"

namespace demod {

struct ClientTls {
  std::string root_ca_pem;      // CA that signed the coordinator's certificate
  std::string client_cert_pem;  // for mTLS; empty otherwise
  std::string client_key_pem;
};

struct ClientOptions {
  std::string target;  // "host:port"
  std::string token;   // bearer token; empty for none
  std::optional<ClientTls> tls;
  // Worker name, hardware, tensor table, resume step and run id; protocol_version is set by
  // Connect (v1::PROTOCOL_VERSION).
  v1::Join join;
  absl::Duration connect_timeout = absl::Seconds(10);
};

struct ClientEvent {
  enum class Kind {
    kAggregate,     // step, bytes: an encoded StepAggregate (common/payload_codec.h);
                    // last_payload_unix_micros
    kActive,        // step: the first step this worker contributes to
    kNotIncluded,   // steps: this worker's payloads that missed their step
    kSendState,     // joiner, state_offset, state_length: send this range of the
                    // parameters to the joiner (SendState); length 0: that transfer is over
    kState,         // step, bytes: the run's parameters after `step`
    kResync,        // the parameters diverged: fresh ones follow as a kState
    kPaused,        // too few workers; the open payload waits
    kEvicted,       // reason; the stream ends next
    kFinished,      // all steps done; the stream ends next
    kShuttingDown,  // the coordinator is going away; reconnect later
    kBatchShare,    // batch_samples: compute that many samples per step from the next on
    kEnded,         // status: the stream is over, with the code the proto's Train lists
                    // (OK after kFinished)
    kLast = kEnded,
  };
  Kind kind;
  int64_t step = 0;
  std::string bytes;
  std::vector<int64_t> steps;
  uint32_t joiner = 0;
  uint64_t state_offset = 0;
  uint64_t state_length = 0;
  std::string reason;
  absl::Status status;
  // kAggregate: when the coordinator took the step's last payload, on its clock (0: none did).
  int64_t last_payload_unix_micros = 0;
  uint64_t batch_samples = 0;  // kBatchShare
};
const char* ClientEventKindName(ClientEvent::Kind kind);

class CoordinatorClient {
 public:
  // Connects, joins, and waits for the Welcome. UNAVAILABLE when the coordinator cannot be
  // reached within connect_timeout; otherwise the coordinator's refusal, with the codes the
  // proto's Train lists (OUT_OF_RANGE when the run has finished, UNAUTHENTICATED,
  // FAILED_PRECONDITION for a different tensor table, RESOURCE_EXHAUSTED when full, ...).
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(ClientOptions options);
  ~CoordinatorClient();

  const v1::Welcome& welcome() const { return welcome_; }
  // The join this worker was admitted with: the tensor table the run checked it against.
  const v1::Join& join() const { return join_; }
  uint32_t worker_id() const { return welcome_.worker_id(); }

  // Each fails with the stream's end status once it is over.
  // `samples`: those behind the payload's gradient (PayloadFrame.samples; 0: not said).
  absl::Status SendPayload(int64_t step, absl::string_view encoded_payload, uint32_t samples = 0);
  // Answers a kSendState `request`: sends its range of `parameters` (the parameters after
  // `step`, the same bytes for every request of one transfer). A request of length 0 sends
  // nothing; INVALID_ARGUMENT when the range starts past the parameters' end.
  absl::Status SendState(const ClientEvent& request, int64_t step, absl::string_view parameters);
  absl::Status SendReport(const v1::StepReport& report);
  absl::Status SendFingerprint(int64_t step, uint64_t hash);

  // The next event, waiting up to `timeout`: DEADLINE_EXCEEDED when none came. After kEnded,
  // every call returns kEnded again.
  absl::StatusOr<ClientEvent> Next(absl::Duration timeout);

  // Leaves the run: closes the stream and waits for the reader. Idempotent.
  void Close();

  uint64_t bytes_sent() const;
  uint64_t bytes_received() const;

 private:
  CoordinatorClient() = default;
  absl::Status Write(const v1::WorkerMessage& message) ABSL_LOCKS_EXCLUDED(write_mu_);
  // Writes `bytes` as frames of at most the run's max_frame_bytes; `fill` makes each message.
  absl::Status SendFrames(absl::string_view bytes,
                          absl::FunctionRef<void(const Frame&, v1::WorkerMessage&)> fill);
  void ReadLoop();
  void HeartbeatLoop();
  void Push(ClientEvent event) ABSL_LOCKS_EXCLUDED(mu_);
  // Turns one message into events; a malformed one ends the stream.
  // Takes frame data out of `message` rather than copying it.
  absl::Status Dispatch(v1::CoordinatorMessage& message);
  // Adds a frame to `frames`; once its message is whole, pushes it as an event of `kind`.
  absl::Status Reassemble(FrameAssembler& frames, ClientEvent::Kind kind, int64_t step,
                          uint64_t total, uint64_t offset, std::string&& data,
                          int64_t last_payload_unix_micros = 0);

  std::unique_ptr<v1::Coordinator::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream_;
  v1::Join join_;
  v1::Welcome welcome_;
  std::thread reader_;
  std::thread heartbeat_;

  mutable absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  bool writes_closed_ ABSL_GUARDED_BY(write_mu_) = false;
  absl::Time last_write_ ABSL_GUARDED_BY(write_mu_);

  mutable absl::Mutex mu_;
  std::deque<ClientEvent> events_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> ended_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t bytes_sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bytes_received_ ABSL_GUARDED_BY(mu_) = 0;

  // Touched by the reader thread only (set up before it starts).
  std::optional<FrameAssembler> aggregate_frames_;
  std::optional<FrameAssembler> state_frames_;
};

}  // namespace demod

#endif  // DEMOD_WORKER_CLIENT_COORDINATOR_CLIENT_H_
