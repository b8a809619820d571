// The gRPC face of a RunCoordinator (proto/demod/v1/coordinator.proto, callback API): one
// TrainStream reactor per worker stream, GetStatus, and the bearer-token check on both.
//
// A Train stream's first message must be a Join; every later message goes to the
// RunCoordinator as it arrives. What the coordinator sends a worker is queued in the
// stream's outbox and written one message at a time, so a slow worker never blocks the
// coordinator or the other workers.
//
// Token: when one is configured, every call must carry the metadata
// "authorization: Bearer <token>"; a missing or wrong one gives UNAUTHENTICATED. The token is
// compared in constant time and never logged. (The standard health service, which Kubernetes
// probes without metadata, is not behind it.)
//
// Thread-safe.
#ifndef DEMOD_SERVER_COORDINATOR_SERVICE_H_
#define DEMOD_SERVER_COORDINATOR_SERVICE_H_

#include <string>

#include "demod/v1/coordinator.grpc.pb.h"
#include "server/run_coordinator.h"

namespace demod {

// Train is a raw method (serialized messages in and out: see coordinator_service.cc).
class CoordinatorService final
    : public v1::Coordinator::WithRawCallbackMethod_Train<
          v1::Coordinator::WithCallbackMethod_GetStatus<v1::Coordinator::Service>> {
 public:
  // `run` must outlive the service. An empty token disables the check.
  CoordinatorService(RunCoordinator* run, std::string token);

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Train(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::RunStatus* response) override;

 private:
  grpc::Status Authenticate(const grpc::CallbackServerContext& context) const;

  RunCoordinator* const run_;
  const std::string token_;
};

// absl::Status and grpc::Status carry the same canonical codes.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace demod

#endif  // DEMOD_SERVER_COORDINATOR_SERVICE_H_
