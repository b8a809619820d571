#include "tests/support/raw_train_call.h"

#include <grpcpp/generic/generic_stub.h>

#include <memory>

namespace demod {

grpc::Status TrainWithBytes(const std::string& target, const std::vector<std::string>& messages) {
  grpc::GenericStub stub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  const auto wait = [&queue] {
    void* tag = nullptr;
    bool ok = false;
    return queue.Next(&tag, &ok) && ok;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, "/demod.v1.Coordinator/Train", &queue);
  call->StartCall(nullptr);
  wait();
  for (const std::string& bytes : messages) {
    grpc::Slice slice(bytes);
    call->Write(grpc::ByteBuffer(&slice, 1), nullptr);
    wait();
  }
  grpc::ByteBuffer reply;
  call->Read(&reply, nullptr);
  while (wait()) call->Read(&reply, nullptr);  // until the server ends the stream
  grpc::Status status;
  call->Finish(&status, nullptr);
  wait();
  queue.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

}  // namespace demod
