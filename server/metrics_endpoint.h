// Serves a prometheus::Registry at http://<address>/metrics (prometheus-cpp's CivetWeb
// exposer) so Prometheus can scrape the coordinator.
//
// StartMetricsEndpoint binds before it returns: an address that is malformed gives
// INVALID_ARGUMENT, one that cannot be bound (in use, not local, no permission) gives
// UNAVAILABLE; neither throws. "host:0" binds any free port; port() says which.
//
// The endpoint serves from its own threads (two) until it is destroyed, and keeps the
// registry alive until then. Destroying it stops serving and joins those threads, which takes
// up to about 2 s (CivetWeb's listener polls with a 2 s quantum).
#ifndef DEMOD_SERVER_METRICS_ENDPOINT_H_
#define DEMOD_SERVER_METRICS_ENDPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace demod {

class MetricsEndpoint {
 public:
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // The port it listens on (the one chosen when the address asked for port 0).
  int port() const { return port_; }

 private:
  friend absl::StatusOr<std::unique_ptr<MetricsEndpoint>> StartMetricsEndpoint(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  MetricsEndpoint(std::shared_ptr<prometheus::Registry> registry,
                  std::unique_ptr<prometheus::Exposer> exposer, int port);

  // The exposer holds only a weak_ptr to what it serves; this keeps the registry alive.
  // Declared first so it is destroyed after the exposer stops serving it.
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};

// `address`: "host:port" or "[ipv6]:port", e.g. "0.0.0.0:9464", "127.0.0.1:0".
absl::StatusOr<std::unique_ptr<MetricsEndpoint>> StartMetricsEndpoint(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry);

}  // namespace demod

#endif  // DEMOD_SERVER_METRICS_ENDPOINT_H_
