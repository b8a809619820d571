// A running coordinator: the gRPC server (Train, GetStatus and the standard health service)
// around one RunCoordinator, its Prometheus endpoint, and the ticker that drives deadlines
// and heartbeat timeouts. demod-coordinator is this plus flags; tests start it in-process on
// loopback.
//
// Thread-safe. Shutdown is idempotent; the destructor shuts down.
#ifndef DEMOD_SERVER_COORDINATOR_SERVER_H_
#define DEMOD_SERVER_COORDINATOR_SERVER_H_

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/run_config.h"
#include "server/coordinator_metrics.h"
#include "server/coordinator_service.h"
#include "server/metrics_endpoint.h"
#include "server/run_coordinator.h"

namespace grpc {
class Server;
}

namespace demod {

struct TlsFiles {
  std::string cert_pem;       // the server's certificate chain (PEM text, not a path)
  std::string key_pem;        // its private key
  std::string client_ca_pem;  // when set, clients must present a certificate it signed (mTLS)
};

struct CoordinatorServerOptions {
  std::string listen_address = "0.0.0.0:7070";   // port 0: any free port (see port())
  std::string metrics_address = "0.0.0.0:9090";  // empty: no metrics endpoint
  RunConfig config;
  std::string state_dir;  // empty: nothing persisted
  std::string token;      // empty: no bearer token required
  std::optional<TlsFiles> tls;
};

class CoordinatorServer {
 public:
  // UNAVAILABLE when an address cannot be bound; the RunCoordinator's and RunStore's errors.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(CoordinatorServerOptions options);
  ~CoordinatorServer();

  int port() const { return port_; }
  int metrics_port() const;  // 0 without a metrics endpoint
  RunCoordinator& run() { return *run_; }

  // Tells workers, ends their streams, saves the state and stops serving. Idempotent.
  void Shutdown();
  // Blocks until Shutdown was called or, with `until_finished`, the run has finished and every
  // worker's stream has ended (RunCoordinator::drained, at most kFinishGrace later).
  void Wait(bool until_finished);

 private:
  CoordinatorServer() = default;
  void TickLoop();

  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<RunCoordinator> run_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool serving_ = false;  // Start succeeded
  std::thread ticker_;

  std::once_flag shutdown_once_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace demod

#endif  // DEMOD_SERVER_COORDINATOR_SERVER_H_
