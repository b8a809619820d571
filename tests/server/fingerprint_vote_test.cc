#include "server/fingerprint_vote.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(FingerprintVoteTest, AllAgree) {
  FingerprintVerdict v = VoteOnFingerprints({{1, 7}, {2, 7}, {3, 7}});
  EXPECT_EQ(v.majority_hash, 7u);
  EXPECT_THAT(v.agreeing, ElementsAre(1, 2, 3));
  EXPECT_THAT(v.divergent, IsEmpty());
}

TEST(FingerprintVoteTest, MinorityDiverges) {
  FingerprintVerdict v = VoteOnFingerprints({{1, 9}, {2, 7}, {3, 7}, {4, 8}});
  EXPECT_EQ(v.majority_hash, 7u);
  EXPECT_THAT(v.agreeing, ElementsAre(2, 3));
  EXPECT_THAT(v.divergent, ElementsAre(1, 4));
}

TEST(FingerprintVoteTest, TieGoesToTheLowestWorkerId) {
  FingerprintVerdict v = VoteOnFingerprints({{5, 2}, {3, 1}});
  EXPECT_EQ(v.majority_hash, 1u);
  EXPECT_THAT(v.divergent, ElementsAre(5));
  v = VoteOnFingerprints({{1, 4}, {2, 5}, {3, 5}, {4, 4}});
  EXPECT_EQ(v.majority_hash, 4u);
  EXPECT_THAT(v.divergent, ElementsAre(2, 3));
}

TEST(FingerprintVoteTest, SingleReportIsTheMajority) {
  FingerprintVerdict v = VoteOnFingerprints({{2, 3}});
  EXPECT_EQ(v.majority_hash, 3u);
  EXPECT_THAT(v.divergent, IsEmpty());
}

}  // namespace
}  // namespace demod
