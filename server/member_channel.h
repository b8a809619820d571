// How the coordinator reaches one worker: the sending half of its Train stream. The gRPC
// shell implements it over a bidirectional stream; RunCoordinator only queues messages and
// ends streams through it, so its decisions never wait on a network write.
//
// Send and End only queue; Flush starts delivering what is queued. They are separate because
// gRPC may perform a write inline, on the calling thread: RunCoordinator queues under its lock
// and flushes after releasing it, so no stream's write holds up the run.
//
// Implementations are thread-safe, and no call blocks on the peer.
#ifndef DEMOD_SERVER_MEMBER_CHANNEL_H_
#define DEMOD_SERVER_MEMBER_CHANNEL_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "server/outbound_message.h"

namespace demod {

class MemberChannel {
 public:
  virtual ~MemberChannel() = default;

  // Queues a message; messages are delivered in the order queued. A message may be shared by
  // many channels (a step's aggregate frames are built once). Dropped after End.
  virtual void Send(std::shared_ptr<const OutboundMessage> message) = 0;

  // Ends the stream with `status` once the queued messages are delivered (an eviction notice
  // reaches the worker before the stream's end). Later calls are ignored.
  virtual void End(const absl::Status& status) = 0;

  // Starts delivering what Send and End queued, unless a delivery is already under way (which
  // then carries on through the queue). Idempotent.
  virtual void Flush() = 0;

  // Bytes queued and not yet delivered, the message being written included.
  virtual uint64_t queued_bytes() const = 0;

  // Arms a one-shot notice: `drained` runs once the bytes queued fall to `bytes` or fewer, on
  // the thread that delivered, with no lock of the channel held (so it may call back into the
  // channel's owner). Returns false, arming nothing, when they already are. Replaces a notice
  // armed before; End and Abort disarm it. How a parameter transfer is paced to its joiner.
  virtual bool NotifyWhenQueuedAtMost(uint64_t bytes, std::function<void()> drained) = 0;

  // Arms a one-shot notice, as above, for when every message queued so far has been written
  // to the stream: the peer's connection has taken it. Returns false, arming nothing, when
  // they already are. How the coordinator knows a joiner holds its parameters.
  virtual bool NotifyWhenDelivered(std::function<void()> delivered) = 0;

  // Ends the stream with `status` without delivering what is queued, for a peer that stopped
  // reading: the queue is dropped but for the message being written, after which the stream
  // ends. Later calls, and End, are ignored.
  virtual void Abort(const absl::Status& status) = 0;
};

}  // namespace demod

#endif  // DEMOD_SERVER_MEMBER_CHANNEL_H_
