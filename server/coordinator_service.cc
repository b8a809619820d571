#include "server/coordinator_service.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/state_frame_header.h"

namespace demod {
namespace {

// Train is served raw: messages arrive and leave as serialized bytes. The coordinator parses
// what workers send itself (so a malformed message gets INVALID_ARGUMENT with a reason), and
// writes each outbound message's one serialized form to every stream that sends it. A state
// frame in protobuf's own encoding is not parsed: its header is read from the wire, and the
// bytes received are what the joiner gets (server/state_frame_header.h).
using Reactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;

// The sending half of one Train stream. gRPC allows one write in flight per stream: messages
// wait here, and the next is written when the last is done. Reactor calls are made outside
// the mutex because gRPC may run a reaction on the calling thread.
class StreamOutbox final : public MemberChannel {
 public:
  explicit StreamOutbox(Reactor* reactor) : reactor_(reactor) {}

  void Send(std::shared_ptr<const OutboundMessage> message) override {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    queued_bytes_ += message->size();
    queue_.push_back(std::move(message));
  }

  uint64_t queued_bytes() const override {
    absl::MutexLock lock(&mu_);
    return queued_bytes_;
  }

  bool NotifyWhenQueuedAtMost(uint64_t bytes, std::function<void()> drained) override {
    absl::MutexLock lock(&mu_);
    if (ending_ || queued_bytes_ <= bytes) return false;
    drained_at_most_ = bytes;
    drained_ = std::move(drained);
    return true;
  }

  bool NotifyWhenDelivered(std::function<void()> delivered) override {
    absl::MutexLock lock(&mu_);
    if (ending_ || queued_bytes_ == 0) return false;
    delivered_at_ = written_bytes_ + queued_bytes_;
    delivered_ = std::move(delivered);
    return true;
  }

  void Abort(const absl::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      if (ending_) return;
      ending_ = true;
      finish_status_ = ToGrpcStatus(status);
      DisarmNotices();
      // The message being written stays until its WriteDone; the rest goes now.
      while (queue_.size() > (writing_ ? 1u : 0u)) {
        queued_bytes_ -= queue_.back()->size();
        queue_.pop_back();
      }
      // A write in flight stays (gRPC owns it) and the stream finishes once it is taken: a
      // peer that never reads holds one message here, not a queue. (Cancelling the call
      // instead would run gRPC's reactions on this thread, under the coordinator's lock.)
    }
  }

  void End(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    ending_ = true;
    finish_status_ = ToGrpcStatus(status);
    DisarmNotices();
  }

  void Flush() override {
    std::shared_ptr<const OutboundMessage> next;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (queue_.empty()) {
        if (!ending_) return;
        finished_ = true;
      } else {
        writing_ = true;
        next = queue_.front();
      }
    }
    if (next == nullptr) {
      reactor_->Finish(finish_status_);
    } else {
      Write(*next);
    }
  }

  void WriteDone(bool ok) {
    std::shared_ptr<const OutboundMessage> next;
    bool finish = false;
    std::function<void()> drained;
    std::function<void()> delivered;
    {
      absl::MutexLock lock(&mu_);
      queued_bytes_ -= queue_.front()->size();
      if (ok) written_bytes_ += queue_.front()->size();
      queue_.pop_front();
      if (!ok) {
        // The stream broke: nothing more can be delivered.
        queue_.clear();
        queued_bytes_ = 0;
        DisarmNotices();
        if (!ending_) {
          ending_ = true;
          finish_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke");
        }
      }
      if (drained_ != nullptr && queued_bytes_ <= drained_at_most_) drained.swap(drained_);
      if (delivered_ != nullptr && written_bytes_ >= delivered_at_) delivered.swap(delivered_);
      if (!queue_.empty()) {
        next = queue_.front();
      } else {
        writing_ = false;
        if (ending_ && !finished_) finished_ = finish = true;
      }
    }
    if (next != nullptr) Write(*next);
    if (finish) reactor_->Finish(finish_status_);
    if (drained != nullptr) drained();
    if (delivered != nullptr) delivered();
  }

  bool ending() const {
    absl::MutexLock lock(&mu_);
    return ending_;
  }

 private:
  // A stream that ends or breaks will deliver nothing more: its notices never fire.
  void DisarmNotices() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    drained_ = nullptr;
    delivered_ = nullptr;
  }

  // Only the thread that set writing_ (or WriteDone's) gets here, once per write.
  void Write(const OutboundMessage& message) {
    in_flight_ = message.wire();  // shares the slices; lives until WriteDone
    reactor_->StartWrite(&in_flight_);
  }

  Reactor* const reactor_;
  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<const OutboundMessage>> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t drained_at_most_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void()> drained_ ABSL_GUARDED_BY(mu_);  // armed by NotifyWhenQueuedAtMost
  uint64_t written_bytes_ ABSL_GUARDED_BY(mu_) = 0;     // taken by gRPC, since the start
  uint64_t delivered_at_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void()> delivered_ ABSL_GUARDED_BY(mu_);  // armed by NotifyWhenDelivered
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_;  // written before ending_ is set, read once finished_ is
  grpc::ByteBuffer in_flight_;  // the message being written
};

// The header of a state frame in `message`, read from its first slices; nullopt for any other
// message or encoding.
std::optional<StateFrameHeader> PeekStateFrame(const grpc::ByteBuffer& message) {
  std::vector<grpc::Slice> slices;
  if (!message.Dump(&slices).ok()) return std::nullopt;
  char prefix[kStateFrameHeaderMaxBytes];
  size_t filled = 0;
  for (const grpc::Slice& slice : slices) {
    const size_t n = std::min(slice.size(), sizeof(prefix) - filled);
    std::memcpy(prefix + filled, slice.begin(), n);
    filled += n;
    if (filled == sizeof(prefix)) break;
  }
  return ReadStateFrameHeader(absl::string_view(prefix, filled), message.Length());
}

class TrainStream final : public Reactor {
 public:
  TrainStream(RunCoordinator* run, const grpc::Status& auth)
      : run_(run), outbox_(std::make_shared<StreamOutbox>(this)) {
    if (!auth.ok()) {
      EndStream(
          absl::Status(static_cast<absl::StatusCode>(auth.error_code()), auth.error_message()));
      return;
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The worker closed its side or the connection broke: it has left the run.
      Leave();
      EndStream(absl::OkStatus());
      return;
    }
    if (id_.has_value()) {
      // Parameters for a joiner go on as they came, unparsed, when their encoding is canonical.
      if (std::optional<StateFrameHeader> header = PeekStateFrame(in_); header.has_value()) {
        run_->HandleStateFrame(*id_, *header, std::make_shared<const OutboundMessage>(in_),
                               absl::Now());
        if (!outbox_->ending()) StartRead(&in_);
        return;
      }
    }
    v1::WorkerMessage message;
    if (!grpc::SerializationTraits<v1::WorkerMessage>::Deserialize(&in_, &message).ok()) {
      const absl::Status malformed =
          absl::InvalidArgumentError("malformed message: not a demod.v1.WorkerMessage");
      if (id_.has_value()) run_->Malformed(*id_, malformed, absl::Now());  // ends the stream too
      EndStream(malformed);
      return;
    }
    if (!id_.has_value()) {
      if (message.kind_case() != v1::WorkerMessage::kJoin) {
        EndStream(absl::InvalidArgumentError("the first message of a stream must be a join"));
        return;
      }
      absl::StatusOr<WorkerId> id = run_->Join(message.join(), outbox_, absl::Now());
      if (!id.ok()) {
        EndStream(id.status());
        return;
      }
      id_ = *id;
    } else {
      run_->Handle(*id_, std::move(message), absl::Now());
    }
    // Once the stream is ending nothing more is read; the pending read would only fail.
    if (!outbox_->ending()) StartRead(&in_);
  }

  void OnWriteDone(bool ok) override { outbox_->WriteDone(ok); }

  // The worker leaves in OnDone, which follows: OnCancel may overlap other reactions.
  void OnCancel() override { EndStream(absl::CancelledError("the call was cancelled")); }

  void OnDone() override {
    Leave();
    delete this;
  }

 private:
  void EndStream(const absl::Status& status) {
    outbox_->End(status);
    outbox_->Flush();
  }

  void Leave() {
    if (id_.has_value() && !left_) {
      left_ = true;
      run_->Disconnected(*id_, absl::Now());
    }
  }

  RunCoordinator* const run_;
  std::shared_ptr<StreamOutbox> outbox_;
  grpc::ByteBuffer in_;
  // Touched only by OnReadDone and OnDone, which never overlap, so these need no lock.
  std::optional<WorkerId> id_;
  bool left_ = false;
};

// Compares without an early exit, so the time taken does not tell how much of a guess was right.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ (i < b.size() ? b[i] : 0);
  return diff == 0;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

CoordinatorService::CoordinatorService(RunCoordinator* run, std::string token)
    : run_(run), token_(std::move(token)) {}

grpc::Status CoordinatorService::Authenticate(const grpc::CallbackServerContext& context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing 'authorization: Bearer <token>' metadata");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(value, kBearer) ||
      !ConstantTimeEquals(value.substr(kBearer.size()), token_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  return grpc::Status::OK;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* CoordinatorService::Train(
    grpc::CallbackServerContext* context) {
  return new TrainStream(run_, Authenticate(*context));
}

grpc::ServerUnaryReactor* CoordinatorService::GetStatus(grpc::CallbackServerContext* context,
                                                        const v1::GetStatusRequest* /*request*/,
                                                        v1::RunStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status auth = Authenticate(*context);
  if (auth.ok()) *response = run_->Status();
  reactor->Finish(auth);
  return reactor;
}

}  // namespace demod
