#include "common/frame_assembler.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace demod {

std::vector<Frame> SplitIntoFrames(absl::string_view message, uint64_t max_frame_bytes) {
  std::vector<Frame> frames;
  const uint64_t step = std::max<uint64_t>(1, max_frame_bytes);
  uint64_t offset = 0;
  do {
    const uint64_t size = std::min<uint64_t>(step, message.size() - offset);
    frames.push_back({offset, message.substr(offset, size)});
    offset += size;
  } while (offset < message.size());
  return frames;
}

FrameAssembler::FrameAssembler(uint64_t max_message_bytes, uint64_t max_frame_bytes,
                               Restarts restarts)
    : max_message_bytes_(max_message_bytes),
      max_frame_bytes_(max_frame_bytes),
      restarts_(restarts) {}

void FrameAssembler::Reset() {
  id_.reset();
  total_ = 0;
  buffer_.clear();
}

absl::Status FrameAssembler::Fail(std::string message) {
  Reset();
  return absl::InvalidArgumentError(std::move(message));
}

absl::StatusOr<std::optional<std::string>> FrameAssembler::Add(int64_t id, uint64_t total_bytes,
                                                               uint64_t offset,
                                                               absl::string_view data) {
  const std::string what = absl::StrCat("message ", id, ": ");
  if (data.size() > max_frame_bytes_) {
    return Fail(absl::StrCat(what, "frame of ", data.size(), " bytes exceeds the limit of ",
                             max_frame_bytes_));
  }
  if (id_.has_value() && offset == 0 && restarts_ == Restarts::kAllowedAtOffsetZero) {
    Reset();  // started over: what arrived of the incomplete message is dropped
  }
  if (id_.has_value() && *id_ != id) {
    return Fail(absl::StrCat(what, "frame arrived while message ", *id_, " is incomplete (",
                             buffer_.size(), " of ", total_, " bytes)"));
  }
  if (!id_.has_value()) {
    if (total_bytes > max_message_bytes_) {
      return Fail(
          absl::StrCat(what, total_bytes, " bytes exceeds the limit of ", max_message_bytes_));
    }
    id_ = id;
    total_ = total_bytes;
    buffer_.reserve(total_bytes);  // empty: Reset() follows every message
  } else if (total_bytes != total_) {
    return Fail(absl::StrCat(what, "total changed from ", total_, " to ", total_bytes, " bytes"));
  }
  if (offset != buffer_.size()) {
    return Fail(absl::StrCat(what, "frame at offset ", offset, ", expected ", buffer_.size()));
  }
  if (data.size() > total_ - buffer_.size()) {
    return Fail(absl::StrCat(what, "frame of ", data.size(), " bytes at offset ", offset,
                             " runs past the total of ", total_));
  }
  if (data.empty() && buffer_.size() < total_) {
    return Fail(absl::StrCat(what, "empty frame at offset ", offset, " of ", total_));
  }
  buffer_.append(data.data(), data.size());
  if (buffer_.size() < total_) return std::optional<std::string>();
  std::optional<std::string> whole(std::move(buffer_));
  Reset();
  return whole;
}

absl::StatusOr<std::optional<std::string>> FrameAssembler::AddOwned(int64_t id,
                                                                    uint64_t total_bytes,
                                                                    uint64_t offset,
                                                                    std::string data) {
  const bool idle = !id_.has_value() || restarts_ == Restarts::kAllowedAtOffsetZero;
  const bool whole = idle && offset == 0 && data.size() == total_bytes && !data.empty() &&
                     data.size() <= max_frame_bytes_ && total_bytes <= max_message_bytes_;
  if (!whole) return Add(id, total_bytes, offset, absl::string_view(data));
  Reset();  // a restart drops what arrived of the incomplete message
  return std::optional<std::string>(std::move(data));
}

}  // namespace demod
