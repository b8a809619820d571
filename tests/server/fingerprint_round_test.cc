#include "server/fingerprint_round.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(FingerprintRoundTest, DecidesOnceEveryEligibleMemberReported) {
  FingerprintRound round;
  for (WorkerId w : {1, 2, 3}) round.Activated(w, 1);
  EXPECT_FALSE(round.Report(1, 10, 0xA).has_value());
  EXPECT_FALSE(round.Report(2, 10, 0xA).has_value());
  std::optional<FingerprintVerdict> verdict = round.Report(3, 10, 0xB);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->majority_hash, 0xAu);
  EXPECT_THAT(verdict->divergent, ElementsAre(3));
  EXPECT_EQ(round.step(), 10);
}

TEST(FingerprintRoundTest, ADecidedRoundStartsEmpty) {
  FingerprintRound round;
  for (WorkerId w : {1, 2}) round.Activated(w, 1);
  round.Report(1, 10, 0xA);
  ASSERT_TRUE(round.Report(2, 10, 0xA).has_value());
  EXPECT_FALSE(round.Report(1, 10, 0xA).has_value());  // a repeat opens nothing by itself
  EXPECT_FALSE(round.Report(1, 20, 0xA).has_value());
  std::optional<FingerprintVerdict> verdict = round.Report(2, 20, 0xA);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_THAT(verdict->divergent, IsEmpty());
}

TEST(FingerprintRoundTest, OneReportIsNoVote) {
  FingerprintRound round;
  round.Activated(1, 1);
  EXPECT_FALSE(round.Report(1, 10, 0xA).has_value());
}

TEST(FingerprintRoundTest, MembersActivatedAfterTheStepDoNotVoteOnIt) {
  FingerprintRound round;
  round.Activated(1, 1);
  round.Activated(2, 1);
  round.Activated(3, 11);                              // joined during step 10
  EXPECT_FALSE(round.Report(3, 10, 0xC).has_value());  // ignored
  round.Report(1, 10, 0xA);
  std::optional<FingerprintVerdict> verdict = round.Report(2, 10, 0xA);
  ASSERT_TRUE(verdict.has_value());  // 3 was not waited for
  EXPECT_THAT(verdict->agreeing, ElementsAre(1, 2));
}

TEST(FingerprintRoundTest, ReportsOfUnknownOrDeactivatedMembersAreIgnored) {
  FingerprintRound round;
  for (WorkerId w : {1, 2, 3}) round.Activated(w, 1);
  EXPECT_FALSE(round.Report(9, 10, 0xF).has_value());
  round.Report(1, 10, 0xA);
  round.Report(3, 10, 0xB);
  round.Deactivated(3);  // resynced: its report goes, and it is not waited for
  EXPECT_FALSE(round.Report(3, 10, 0xB).has_value());
  std::optional<FingerprintVerdict> verdict = round.Report(2, 10, 0xA);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_THAT(verdict->agreeing, ElementsAre(1, 2));
  EXPECT_THAT(verdict->divergent, IsEmpty());
}

TEST(FingerprintRoundTest, ANewerStepSupersedesTheRound) {
  FingerprintRound round;
  for (WorkerId w : {1, 2}) round.Activated(w, 1);
  round.Report(1, 10, 0xA);
  EXPECT_FALSE(round.Report(2, 20, 0xB).has_value());  // step 10's report of 1 is dropped
  EXPECT_EQ(round.step(), 20);
  EXPECT_FALSE(round.Report(2, 10, 0xA).has_value());  // older: ignored
  std::optional<FingerprintVerdict> verdict = round.Report(1, 20, 0xB);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->majority_hash, 0xBu);
}

TEST(FingerprintRoundTest, AMemberThatLeftIsNotWaitedFor) {
  FingerprintRound round;
  for (WorkerId w : {1, 2, 3}) round.Activated(w, 1);
  round.Report(1, 10, 0xA);
  round.Deactivated(2);
  ASSERT_TRUE(round.Report(3, 10, 0xA).has_value());
}

}  // namespace
}  // namespace demod
