#include "server/coordinator_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace demod {
namespace {

// The ticker's longest sleep: the granularity of heartbeat timeouts.
constexpr absl::Duration kMaxTickInterval = absl::Milliseconds(200);
// Room for a frame's envelope (step, offsets, field tags) above max_frame_bytes of data.
constexpr int kFrameEnvelopeBytes = 64 << 10;

// gRPC listens with SO_REUSEPORT, so a second coordinator on a port in use would start and
// share the first one's workers (and this gRPC ignores GRPC_ARG_ALLOW_REUSEPORT=0). A plain
// bind, without that option, fails while anyone listens there: check with one first.
absl::Status CheckPortFree(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return absl::OkStatus();  // gRPC reports malformed ones
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (port == "0") return absl::OkStatus();
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found) != 0) {
    return absl::OkStatus();
  }
  absl::Status status;
  for (addrinfo* a = found; a != nullptr && status.ok(); a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 && errno == EADDRINUSE) {
      status = absl::UnavailableError(
          absl::StrCat("cannot listen on ", address, ": the address is in use"));
    }
    close(fd);
  }
  freeaddrinfo(found);
  return status;
}

std::shared_ptr<grpc::ServerCredentials> Credentials(const std::optional<TlsFiles>& tls) {
  if (!tls.has_value()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      tls->client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                 : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls->client_ca_pem;
  options.pem_key_cert_pairs.push_back({tls->key_pem, tls->cert_pem});
  return grpc::SslServerCredentials(options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorServerOptions options) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  RunCoordinator::Options run_options;
  run_options.config = options.config;
  std::string run_id = options.config.run_id;
  if (!options.state_dir.empty()) {
    DEMOD_ASSIGN_OR_RETURN(RunStore store, RunStore::Open(options.state_dir));
    // A resumed run keeps its saved id, and its metrics are labelled with it.
    absl::StatusOr<std::optional<PersistedRun>> saved = store.Load();
    if (saved.ok() && saved->has_value()) run_id = (*saved)->config.run_id;
    run_options.store = std::move(store);
  }
  server->metrics_ = std::make_unique<CoordinatorMetrics>(run_id);
  run_options.metrics = server->metrics_.get();
  DEMOD_ASSIGN_OR_RETURN(server->run_, RunCoordinator::Create(std::move(run_options)));
  if (!options.metrics_address.empty()) {
    DEMOD_ASSIGN_OR_RETURN(
        server->metrics_endpoint_,
        StartMetricsEndpoint(options.metrics_address, server->metrics_->registry()));
  }

  DEMOD_RETURN_IF_ERROR(CheckPortFree(options.listen_address));
  server->service_ = std::make_unique<CoordinatorService>(server->run_.get(), options.token);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, Credentials(options.tls), &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(server->run_->config().max_frame_bytes + kFrameEnvelopeBytes, INT32_MAX)));
  builder.SetMaxSendMessageSize(static_cast<int>(
      std::min<int64_t>(server->run_->config().max_frame_bytes + kFrameEnvelopeBytes, INT32_MAX)));
  // Workers ping every 10 s (worker/client/coordinator_client.cc) to find dead links; gRPC's
  // default would answer pings that often, without data, with GOAWAY. The coordinator pings
  // too, so a worker whose link died leaves within about 20 s even between heartbeats.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address,
                     " (address in use, malformed, or TLS files invalid)"));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  server->serving_ = true;
  server->ticker_ = std::thread([s = server.get()] { s->TickLoop(); });
  Log(LogLevel::kInfo,
      absl::StrCat("coordinator for run ", server->run_->config().run_id, " listening on port ",
                   server->port_, options.tls.has_value() ? " (TLS" : " (plaintext",
                   options.tls.has_value() && !options.tls->client_ca_pem.empty() ? ", mTLS" : "",
                   options.token.empty() ? ", no token)" : ", bearer token)",
                   server->metrics_endpoint_ != nullptr
                       ? absl::StrCat(", metrics on port ", server->metrics_endpoint_->port())
                       : std::string()));
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

int CoordinatorServer::metrics_port() const {
  return metrics_endpoint_ == nullptr ? 0 : metrics_endpoint_->port();
}

void CoordinatorServer::TickLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    absl::Time wake = absl::Now() + kMaxTickInterval;
    if (std::optional<absl::Time> deadline = run_->NextDeadline(); deadline.has_value()) {
      wake = std::min(wake, *deadline);
    }
    const auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
    mu_.AwaitWithDeadline(absl::Condition(&stop), wake);
    if (stopping_) break;
    mu_.Unlock();
    run_->Tick(absl::Now());
    mu_.Lock();
  }
}

void CoordinatorServer::Wait(bool until_finished) {
  absl::MutexLock lock(&mu_);
  while (!stopping_ && !(until_finished && run_->drained())) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(200));
  }
}

void CoordinatorServer::Shutdown() {
  // A signal thread and main may both get here: the second caller waits for the first.
  std::call_once(shutdown_once_, [this] {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (ticker_.joinable()) ticker_.join();
    if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(false);
    // Only a coordinator that served has state worth saving: one that failed to start (a
    // port in use, say) must not overwrite the state of the one already running there.
    if (serving_) run_->Shutdown(absl::Now());
    // Streams were told and ended above; give their last writes a moment, then cancel the rest.
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  });
}

}  // namespace demod
