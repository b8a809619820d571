#include "server/parameter_relay.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::HasSubstr;
using Verdict = ParameterRelay::Verdict;

constexpr uint64_t kMaxFrame = 200;
constexpr uint64_t kMaxState = 5000;
constexpr uint64_t kWindow = ParameterRelay::kWindowFrames * kMaxFrame;  // 800
constexpr int64_t kCompleted = 7;
constexpr WorkerId kJoiner = 5;
constexpr WorkerId kDonor = 2;

StateFrameHeader Frame(int64_t step, uint64_t total, uint64_t offset, uint64_t data,
                       uint32_t joiner = kJoiner) {
  return StateFrameHeader{joiner, step, total, offset, data};
}

Verdict Judge(ParameterRelay& relay, WorkerId donor, const StateFrameHeader& frame) {
  absl::StatusOr<ParameterRelay::Judged> judged = relay.Judge(donor, frame, kMaxState, kCompleted);
  EXPECT_OK(judged);
  return judged.ok() ? judged->verdict : Verdict::kDrop;
}

absl::Status JudgeError(ParameterRelay& relay, const StateFrameHeader& frame) {
  return relay.Judge(kDonor, frame, kMaxState, kCompleted).status();
}

TEST(ParameterRelayTest, RelaysATransferFrameByFrameAndEndsIt) {
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kRelay);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 100, 100)), Verdict::kRelay);
  absl::StatusOr<ParameterRelay::Judged> last =
      relay.Judge(kDonor, Frame(7, 250, 200, 50), kMaxState, kCompleted);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->verdict, Verdict::kRelayLast);
  EXPECT_EQ(last->total_bytes, 250u);
  EXPECT_EQ(last->step, 7);
  // Over: a further frame is not part of any transfer.
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kDrop);
}

TEST(ParameterRelayTest, AOneFrameTransferIsItsLastFrame) {
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  EXPECT_EQ(Judge(relay, kDonor, Frame(0, 1, 0, 1)), Verdict::kRelayLast);
}

TEST(ParameterRelayTest, DropsFramesOfOtherDonorsAndUnknownJoiners) {
  ParameterRelay relay(kMaxFrame);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kDrop);
  relay.Start(kJoiner, kDonor);
  EXPECT_EQ(Judge(relay, /*donor=*/3, Frame(7, 250, 0, 100)), Verdict::kDrop);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100, /*joiner=*/6)), Verdict::kDrop);
  // A dropped frame, even a malformed one, does not touch the transfer.
  EXPECT_EQ(Judge(relay, 3, Frame(99, 0, 40, 0)), Verdict::kDrop);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kRelay);
}

TEST(ParameterRelayTest, ANewDonorStartsOverAndTheOldOnesFramesAreDropped) {
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kRelay);
  relay.Start(kJoiner, /*donor=*/3);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 100, 100)), Verdict::kDrop);
  EXPECT_EQ(Judge(relay, 3, Frame(6, 120, 0, 100)), Verdict::kRelay);  // another step and size
  EXPECT_EQ(Judge(relay, 3, Frame(6, 120, 100, 20)), Verdict::kRelayLast);
}

TEST(ParameterRelayTest, ADonorStartingOverIsRefused) {
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kRelay);
  absl::Status status = JudgeError(relay, Frame(7, 150, 0, 100));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("expected offset 100 of 250"));
}

TEST(ParameterRelayTest, StartAsksTheDonorForTheFirstWindow) {
  ParameterRelay relay(kMaxFrame);
  using Request = ParameterRelay::Request;
  EXPECT_EQ(relay.Start(kJoiner, kDonor), std::vector<Request>({{kDonor, kJoiner, 0, kWindow}}));
  // Another donor: the first one is told the transfer is over, the new one asked.
  EXPECT_EQ(relay.Start(kJoiner, 3),
            std::vector<Request>({{kDonor, kJoiner, 0, 0}, {3, kJoiner, 0, kWindow}}));
  EXPECT_EQ(relay.End(kJoiner), Request({3, kJoiner, 0, 0}));
  EXPECT_EQ(relay.End(kJoiner), std::nullopt);
}

TEST(ParameterRelayTest, AsksForTheNextWindowOnceTheJoinerHasRoomForIt) {
  using Request = ParameterRelay::Request;
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  EXPECT_EQ(relay.QueueRoom(kJoiner), std::nullopt);  // the size is not known yet
  EXPECT_EQ(relay.Next(kJoiner, 0), std::nullopt);
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 3000, 0, 200)), Verdict::kRelay);
  // 600 asked for and not received: a window is due while at most 200 bytes are queued.
  EXPECT_EQ(relay.QueueRoom(kJoiner), 200u);
  EXPECT_EQ(relay.Next(kJoiner, 201), std::nullopt);
  EXPECT_EQ(relay.Next(kJoiner, 200), Request({kDonor, kJoiner, kWindow, kWindow}));
  EXPECT_EQ(relay.QueueRoom(kJoiner), std::nullopt);  // the donor owes 1400
  EXPECT_EQ(relay.Next(kJoiner, 0), std::nullopt);
  for (uint64_t offset = 200; offset < kWindow; offset += 200) {
    EXPECT_EQ(Judge(relay, kDonor, Frame(7, 3000, offset, 200)), Verdict::kRelay);
  }
  EXPECT_EQ(relay.Next(kJoiner, 1), std::nullopt);  // the joiner has not drained
  EXPECT_EQ(relay.Next(kJoiner, 0), Request({kDonor, kJoiner, 2 * kWindow, kWindow}));
  for (uint64_t offset = kWindow; offset < 2 * kWindow; offset += 200) {
    EXPECT_EQ(Judge(relay, kDonor, Frame(7, 3000, offset, 200)), Verdict::kRelay);
  }
  // The last window is what remains.
  EXPECT_EQ(relay.Next(kJoiner, 0), Request({kDonor, kJoiner, 3 * kWindow, 3000 - 3 * kWindow}));
  EXPECT_EQ(relay.Next(kJoiner, 0), std::nullopt);  // everything was asked for
  EXPECT_EQ(relay.QueueRoom(kJoiner), std::nullopt);
  EXPECT_EQ(relay.Next(/*joiner=*/9, 0), std::nullopt);
  EXPECT_EQ(relay.QueueRoom(/*joiner=*/9), std::nullopt);
}

TEST(ParameterRelayTest, FramesPastWhatWasAskedForAreRefused) {
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  for (uint64_t offset = 0; offset < kWindow; offset += 200) {
    EXPECT_EQ(Judge(relay, kDonor, Frame(7, 3000, offset, 200)), Verdict::kRelay);
  }
  absl::Status status = JudgeError(relay, Frame(7, 3000, kWindow, 200));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("goes past what was asked for (bytes up to 800)"));
}

TEST(ParameterRelayTest, EndDropsTheTransfer) {
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  relay.End(kJoiner);
  relay.End(kJoiner);  // idempotent
  EXPECT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kDrop);
}

TEST(ParameterRelayTest, RefusesFramesThatDoNotContinueTheTransfer) {
  struct Case {
    const char* name;
    StateFrameHeader frame;
    const char* message;
  };
  const Case cases[] = {
      {"empty transfer", Frame(7, 0, 0, 0), "total_bytes 0 is not in [1, 5000]"},
      {"too large", Frame(7, kMaxState + 1, 0, 100), "total_bytes 5001 is not in [1, 5000]"},
      {"step not completed", Frame(kCompleted + 1, 250, 0, 100), "step 8 is not a completed step"},
      {"negative step", Frame(-1, 250, 0, 100), "step -1 is not a completed step"},
      {"gap", Frame(7, 250, 150, 100), "does not continue the transfer (expected offset 100"},
      {"overlap", Frame(7, 250, 50, 100), "expected offset 100 of 250"},
      {"total changes", Frame(7, 260, 100, 100), "does not continue the transfer"},
      {"step changes", Frame(6, 250, 100, 100), "does not continue the transfer"},
      {"frame too large", Frame(7, 250, 100, kMaxFrame + 1), "frames of 1 to 200 bytes"},
      {"past the total", Frame(7, 250, 100, 151), "does not continue the transfer"},
      {"empty frame", Frame(7, 250, 100, 0), "does not continue the transfer"},
  };
  for (const Case& c : cases) {
    ParameterRelay relay(kMaxFrame);
    relay.Start(kJoiner, kDonor);
    if (c.frame.offset != 0) {
      ASSERT_EQ(Judge(relay, kDonor, Frame(7, 250, 0, 100)), Verdict::kRelay) << c.name;
    }
    absl::Status status = JudgeError(relay, c.frame);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.name;
  }
}

TEST(ParameterRelayTest, AFrameBeforeTheFirstIsRefused) {
  ParameterRelay relay(kMaxFrame);
  relay.Start(kJoiner, kDonor);
  absl::Status status = JudgeError(relay, Frame(7, 250, 100, 100));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("expected offset 0 of 0"));
}

}  // namespace
}  // namespace demod
