#include "worker/client/coordinator_client.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/frame_assembler.h"

namespace demod {
namespace {

// A worker trusts its coordinator, but not without bound: no single aggregate or parameter
// transfer it accepts is larger than this.
constexpr uint64_t kMaxIncomingMessageBytes = uint64_t{16} << 30;

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

ClientEvent EventOf(ClientEvent::Kind kind, std::string reason = {}) {
  ClientEvent event;
  event.kind = kind;
  event.reason = std::move(reason);
  return event;
}

}  // namespace

const char* ClientEventKindName(ClientEvent::Kind kind) {
  static const char* const kNames[] = {"aggregate", "active",        "not_included", "send_state",
                                       "state",     "resync",        "paused",       "evicted",
                                       "finished",  "shutting_down", "batch_share",  "ended"};
  static_assert(std::size(kNames) == static_cast<size_t>(ClientEvent::Kind::kLast) + 1);
  return kNames[static_cast<int>(kind)];
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(
    ClientOptions options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls.has_value()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls->root_ca_pem;
    ssl.pem_cert_chain = options.tls->client_cert_pem;
    ssl.pem_private_key = options.tls->client_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // frames are bounded by the run's max_frame_bytes
  args.SetMaxSendMessageSize(-1);
  // gRPC shares one connection among a process's channels to the same target; each worker
  // (a test or demod-loadgen runs many in one process) gets its own, as separate machines do.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // A link that dies silently (no reset reaches either side) is found within about 20 s by
  // HTTP/2 pings, instead of when TCP gives up retransmitting or a step times out. The
  // coordinator accepts pings this often (server/coordinator_server.cc).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, credentials, args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + options.connect_timeout))) {
    return absl::UnavailableError(absl::StrCat("cannot reach the coordinator at ", options.target,
                                               " within ",
                                               absl::FormatDuration(options.connect_timeout)));
  }
  std::unique_ptr<CoordinatorClient> client(new CoordinatorClient());
  client->stub_ = v1::Coordinator::NewStub(channel);
  if (!options.token.empty()) {
    client->context_.AddMetadata("authorization", absl::StrCat("Bearer ", options.token));
  }
  client->stream_ = client->stub_->Train(&client->context_);
  v1::WorkerMessage join;
  *join.mutable_join() = options.join;
  join.mutable_join()->set_protocol_version(v1::PROTOCOL_VERSION);
  v1::CoordinatorMessage first;
  if (!client->stream_->Write(join) || !client->stream_->Read(&first)) {
    // Refused: the status says why.
    return FromGrpc(client->stream_->Finish());
  }
  if (first.kind_case() != v1::CoordinatorMessage::kWelcome) {
    client->context_.TryCancel();
    client->stream_->Finish();
    return absl::InternalError("the coordinator's first message was not a welcome");
  }
  client->join_ = join.join();
  client->welcome_ = first.welcome();
  const uint64_t max_frame_bytes = client->welcome_.run().max_frame_bytes();
  client->aggregate_frames_.emplace(kMaxIncomingMessageBytes, max_frame_bytes);
  client->state_frames_.emplace(kMaxIncomingMessageBytes, max_frame_bytes,
                                FrameAssembler::Restarts::kAllowedAtOffsetZero);
  {
    absl::MutexLock lock(&client->write_mu_);
    client->last_write_ = absl::Now();
  }
  client->bytes_sent_ = join.ByteSizeLong();
  client->bytes_received_ = first.ByteSizeLong();
  client->reader_ = std::thread([c = client.get()] { c->ReadLoop(); });
  client->heartbeat_ = std::thread([c = client.get()] { c->HeartbeatLoop(); });
  return client;
}

CoordinatorClient::~CoordinatorClient() { Close(); }

absl::Status CoordinatorClient::Write(const v1::WorkerMessage& message) {
  {
    absl::MutexLock lock(&write_mu_);
    if (!writes_closed_ && stream_->Write(message)) {
      last_write_ = absl::Now();
      absl::MutexLock counts(&mu_);
      bytes_sent_ += message.ByteSizeLong();
      return absl::OkStatus();
    }
    writes_closed_ = true;
  }
  // The reader sees the end too and records how it ended (it needs write_mu_ to do so).
  absl::MutexLock lock(&mu_);
  const auto over = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ended_.has_value() || closing_;
  };
  mu_.Await(absl::Condition(&over));
  if (ended_.has_value() && !ended_->ok()) return *ended_;
  return absl::UnavailableError("the stream to the coordinator is closed");
}

absl::Status CoordinatorClient::SendFrames(
    absl::string_view bytes, absl::FunctionRef<void(const Frame&, v1::WorkerMessage&)> fill) {
  for (const Frame& f : SplitIntoFrames(bytes, welcome_.run().max_frame_bytes())) {
    v1::WorkerMessage message;
    fill(f, message);
    if (absl::Status s = Write(message); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CoordinatorClient::SendPayload(int64_t step, absl::string_view encoded_payload,
                                            uint32_t samples) {
  return SendFrames(encoded_payload, [&](const Frame& f, v1::WorkerMessage& message) {
    v1::PayloadFrame* frame = message.mutable_payload();
    frame->set_step(step);
    frame->set_samples(samples);
    frame->set_total_bytes(encoded_payload.size());
    frame->set_offset(f.offset);
    frame->set_data(f.data.data(), f.data.size());
  });
}

absl::Status CoordinatorClient::SendState(const ClientEvent& request, int64_t step,
                                          absl::string_view parameters) {
  if (request.state_length == 0) return absl::OkStatus();
  if (request.state_offset >= parameters.size()) {
    return absl::InvalidArgumentError(absl::StrCat("asked for parameters from byte ",
                                                   request.state_offset, " of ", parameters.size(),
                                                   " for worker ", request.joiner));
  }
  const absl::string_view range = parameters.substr(request.state_offset, request.state_length);
  return SendFrames(range, [&](const Frame& f, v1::WorkerMessage& message) {
    v1::StateFrame* frame = message.mutable_state();
    frame->set_joiner_id(request.joiner);
    frame->set_step(step);
    frame->set_total_bytes(parameters.size());
    frame->set_offset(request.state_offset + f.offset);
    frame->set_data(f.data.data(), f.data.size());
  });
}

absl::Status CoordinatorClient::SendReport(const v1::StepReport& report) {
  v1::WorkerMessage message;
  *message.mutable_report() = report;
  return Write(message);
}

absl::Status CoordinatorClient::SendFingerprint(int64_t step, uint64_t hash) {
  v1::WorkerMessage message;
  message.mutable_fingerprint()->set_step(step);
  message.mutable_fingerprint()->set_hash(hash);
  return Write(message);
}

void CoordinatorClient::Push(ClientEvent event) {
  absl::MutexLock lock(&mu_);
  events_.push_back(std::move(event));
}

absl::Status CoordinatorClient::Reassemble(FrameAssembler& frames, ClientEvent::Kind kind,
                                           int64_t step, uint64_t total, uint64_t offset,
                                           std::string&& data, int64_t last_payload_unix_micros) {
  absl::StatusOr<std::optional<std::string>> whole =
      frames.AddOwned(step, total, offset, std::move(data));
  if (!whole.ok()) {
    return absl::Status(whole.status().code(), absl::StrCat(ClientEventKindName(kind),
                                                            " frames: ", whole.status().message()));
  }
  if (!whole->has_value()) return absl::OkStatus();
  ClientEvent event = EventOf(kind);
  event.step = step;
  event.bytes = **std::move(whole);
  event.last_payload_unix_micros = last_payload_unix_micros;
  Push(std::move(event));
  return absl::OkStatus();
}

absl::Status CoordinatorClient::Dispatch(v1::CoordinatorMessage& message) {
  switch (message.kind_case()) {
    case v1::CoordinatorMessage::kAggregate: {
      v1::AggregateFrame& f = *message.mutable_aggregate();
      return Reassemble(*aggregate_frames_, ClientEvent::Kind::kAggregate, f.step(),
                        f.total_bytes(), f.offset(), std::move(*f.mutable_data()),
                        f.last_payload_unix_micros());
    }
    case v1::CoordinatorMessage::kState: {
      v1::StateFrame& f = *message.mutable_state();
      return Reassemble(*state_frames_, ClientEvent::Kind::kState, f.step(), f.total_bytes(),
                        f.offset(), std::move(*f.mutable_data()));
    }
    case v1::CoordinatorMessage::kControl: {
      const v1::Control& c = message.control();
      ClientEvent event = EventOf(ClientEvent::Kind::kEnded, c.reason());
      switch (c.kind()) {
        case v1::Control::KIND_ACTIVE:
          if (c.steps_size() != 1) return absl::InvalidArgumentError("ACTIVE without its step");
          event.kind = ClientEvent::Kind::kActive;
          event.step = c.steps(0);
          break;
        case v1::Control::KIND_NOT_INCLUDED:
          event.kind = ClientEvent::Kind::kNotIncluded;
          event.steps.assign(c.steps().begin(), c.steps().end());
          break;
        case v1::Control::KIND_SEND_STATE:
          event.kind = ClientEvent::Kind::kSendState;
          event.joiner = c.joiner_id();
          event.state_offset = c.state_offset();
          event.state_length = c.state_length();
          break;
        case v1::Control::KIND_RESYNC:
          event.kind = ClientEvent::Kind::kResync;
          break;
        case v1::Control::KIND_PAUSED:
          event.kind = ClientEvent::Kind::kPaused;
          break;
        case v1::Control::KIND_EVICTED:
          event.kind = ClientEvent::Kind::kEvicted;
          break;
        case v1::Control::KIND_FINISHED:
          event.kind = ClientEvent::Kind::kFinished;
          break;
        case v1::Control::KIND_SHUTTING_DOWN:
          event.kind = ClientEvent::Kind::kShuttingDown;
          break;
        case v1::Control::KIND_BATCH_SHARE:
          if (c.batch_samples() == 0) {
            return absl::InvalidArgumentError("BATCH_SHARE of 0 samples");
          }
          event.kind = ClientEvent::Kind::kBatchShare;
          event.batch_samples = c.batch_samples();
          break;
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("control message of unknown kind ", c.kind()));
      }
      Push(std::move(event));
      return absl::OkStatus();
    }
    case v1::CoordinatorMessage::kWelcome:
      return absl::InvalidArgumentError("a second welcome");
    default:
      return absl::InvalidArgumentError("a message of no known kind (newer protocol?)");
  }
}

void CoordinatorClient::ReadLoop() {
  v1::CoordinatorMessage message;
  absl::Status broken;
  while (stream_->Read(&message)) {
    {
      absl::MutexLock lock(&mu_);
      bytes_received_ += message.ByteSizeLong();
    }
    broken = Dispatch(message);
    if (!broken.ok()) {
      context_.TryCancel();
      break;
    }
  }
  // Finish may not overlap a Write: take the write lock, and keep later writes out.
  absl::Status status;
  {
    absl::MutexLock lock(&write_mu_);
    writes_closed_ = true;
    status = FromGrpc(stream_->Finish());
  }
  if (!broken.ok()) {
    status = absl::Status(
        broken.code(), absl::StrCat("malformed message from the coordinator: ", broken.message()));
  }
  absl::MutexLock lock(&mu_);
  ClientEvent end = EventOf(ClientEvent::Kind::kEnded, std::string(status.message()));
  end.status = status;
  events_.push_back(std::move(end));
  ended_ = status;
}

void CoordinatorClient::HeartbeatLoop() {
  const absl::Duration interval =
      absl::Milliseconds(std::max<int64_t>(welcome_.run().heartbeat_interval_ms(), 10));
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return closing_ || ended_.has_value();
      };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), interval / 2)) return;
    }
    bool due = false;
    {
      absl::MutexLock lock(&write_mu_);
      due = !writes_closed_ && absl::Now() - last_write_ >= interval;
    }
    if (due) {
      v1::WorkerMessage heartbeat;
      heartbeat.mutable_heartbeat();
      (void)Write(heartbeat);  // a failure shows as kEnded
    }
  }
}

absl::StatusOr<ClientEvent> CoordinatorClient::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !events_.empty() || ended_.has_value();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout) || events_.empty()) {
    if (ended_.has_value()) {
      ClientEvent end = EventOf(ClientEvent::Kind::kEnded, std::string(ended_->message()));
      end.status = *ended_;
      return end;
    }
    return absl::DeadlineExceededError(
        absl::StrCat("no message from the coordinator in ", absl::FormatDuration(timeout)));
  }
  ClientEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

void CoordinatorClient::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closing_) return;
    closing_ = true;
  }
  if (!reader_.joinable()) return;  // Connect failed: the stream is already finished
  {
    absl::MutexLock lock(&write_mu_);
    if (!writes_closed_) {
      writes_closed_ = true;
      stream_->WritesDone();
    }
  }
  // The coordinator ends the stream when the worker closes its side; cancel if it does not.
  {
    absl::MutexLock lock(&mu_);
    const auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_.has_value(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ended), absl::Seconds(5))) context_.TryCancel();
  }
  if (reader_.joinable()) reader_.join();
  if (heartbeat_.joinable()) heartbeat_.join();
}

uint64_t CoordinatorClient::bytes_sent() const {
  absl::MutexLock lock(&mu_);
  return bytes_sent_;
}

uint64_t CoordinatorClient::bytes_received() const {
  absl::MutexLock lock(&mu_);
  return bytes_received_;
}

}  // namespace demod
