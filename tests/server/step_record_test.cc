#include "server/step_record.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const absl::Time kOpened = absl::FromUnixSeconds(1000);

TEST(StepRecordTest, SumsUpAStepEveryoneContributedTo) {
  StepRecord record(12, kOpened, {1, 2, 3});
  EXPECT_EQ(record.step(), 12);
  EXPECT_FALSE(record.last_payload().has_value());
  record.PayloadTaken(kOpened + absl::Milliseconds(40));
  record.PayloadTaken(kOpened + absl::Milliseconds(45));
  record.PayloadTaken(kOpened + absl::Milliseconds(70));
  EXPECT_EQ(record.last_payload(), kOpened + absl::Milliseconds(70));
  const StepSummary s = record.Close(kOpened + absl::Milliseconds(72), {1, 2, 3}, 600, 900,
                                     "all expected payloads arrived");
  EXPECT_EQ(s.step, 12);
  EXPECT_EQ(s.duration, absl::Milliseconds(72));
  EXPECT_EQ(s.barrier_wait, absl::Milliseconds(32));
  EXPECT_THAT(s.contributors, ElementsAre(1, 2, 3));
  EXPECT_THAT(s.missing, IsEmpty());
  EXPECT_EQ(s.expected, 3u);
  EXPECT_EQ(s.LogLine(),
            "step 12 closed in 72ms: contributors [1,2,3] of 3, 600 bytes in, 900 bytes out (all "
            "expected payloads arrived)");
}

TEST(StepRecordTest, TheMissingAreTheExpectedWhoDidNotContribute) {
  StepRecord record(3, kOpened, {1, 2, 4, 7});
  record.PayloadTaken(kOpened + absl::Milliseconds(10));
  const StepSummary s = record.Close(kOpened + absl::Milliseconds(500), {2, 7}, 10, 20, "deadline");
  EXPECT_THAT(s.missing, ElementsAre(1, 4));
  EXPECT_EQ(s.barrier_wait, absl::Milliseconds(490));  // the fastest waited for the deadline
}

TEST(StepRecordTest, AStepWithoutPayloadsWaitedForNone) {
  StepRecord record(5, kOpened, {1});
  const StepSummary s = record.Close(kOpened + absl::Seconds(2), {}, 0, 0, "deadline");
  EXPECT_EQ(s.barrier_wait, absl::ZeroDuration());
  EXPECT_THAT(s.missing, ElementsAre(1));
  EXPECT_EQ(s.duration, absl::Seconds(2));
}

TEST(StepRecordTest, DurationsInTheLogLineAreCutToATenthOfAMillisecond) {
  StepRecord record(1, kOpened, {});
  EXPECT_THAT(record.Close(kOpened + absl::Microseconds(1234567), {}, 0, 0, "r").LogLine(),
              ::testing::StartsWith("step 1 closed in 1.2345s:"));
}

}  // namespace
}  // namespace demod
