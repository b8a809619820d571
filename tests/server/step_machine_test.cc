#include "server/step_machine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Kind = Action::Kind;

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

absl::Time At(double seconds) { return kT0 + absl::Seconds(seconds); }

RunConfig Config(int min_workers = 1) {
  RunConfig c;
  c.run_id = "test";
  c.min_workers = min_workers;
  c.max_workers = 8;
  c.total_steps = 100;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = absl::Seconds(10);
  c.max_missed_steps = 3;
  c.heartbeat_timeout = absl::Seconds(30);
  return c;
}

std::vector<Kind> Kinds(const std::vector<Action>& actions) {
  std::vector<Kind> k;
  for (const Action& a : actions) k.push_back(a.kind);
  return k;
}

const Action* Find(const std::vector<Action>& actions, Kind kind) {
  for (const Action& a : actions) {
    if (a.kind == kind) return &a;
  }
  return nullptr;
}

// A machine with `n` active workers (ids 1..n) and step 1 open.
StepMachine Running(int n, RunConfig config = Config()) {
  config.min_workers = n;
  StepMachine m(config);
  for (int i = 1; i <= n; ++i) {
    const StepMachine::Joined joined = ValueOrStop(m.Join("w" + std::to_string(i), kT0));
    if (i > 1) {
      EXPECT_OK(m.StateTransferred(joined.id, kT0));
    }
  }
  EXPECT_EQ(m.open_step(), 1);
  return m;
}

TEST(StepMachineTest, FirstWorkerIsTheSeedAndStartsTraining) {
  StepMachine m(Config(1));
  auto joined = m.Join("a", kT0);
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(joined->id, 1u);
  EXPECT_THAT(Kinds(joined->actions), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ(joined->actions[0].step, 1);
  EXPECT_THAT(joined->actions[1].workers, ElementsAre(1u));
  EXPECT_EQ(m.deadline(), At(10));
}

TEST(StepMachineTest, WaitsForMinWorkersAndGivesLaterOnesTheSeedsParameters) {
  StepMachine m(Config(2));
  auto a = m.Join("a", kT0);
  EXPECT_THAT(Kinds(a->actions), ElementsAre(Kind::kWelcome, Kind::kPause));
  EXPECT_THAT(a->actions[1].reason, HasSubstr("1 of 2"));
  auto b = m.Join("b", At(1));
  ASSERT_THAT(Kinds(b->actions), ElementsAre(Kind::kRequestState));
  EXPECT_EQ(b->actions[0].worker, 2u);
  EXPECT_EQ(b->actions[0].donor, 1u);
  EXPECT_FALSE(m.open_step().has_value());
  auto synced = m.StateTransferred(2, At(2));
  ASSERT_TRUE(synced.ok());
  EXPECT_THAT(Kinds(*synced), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_THAT((*synced)[1].workers, ElementsAre(1u, 2u));
  EXPECT_FALSE(m.paused());
}

TEST(StepMachineTest, StepClosesWhenEveryPayloadArrived) {
  StepMachine m = Running(2);
  EXPECT_TRUE(m.Payload(2, 1, At(1))->empty());
  auto closed = m.Payload(1, 1, At(2));
  ASSERT_THAT(Kinds(*closed), ElementsAre(Kind::kCloseStep, Kind::kOpenStep));
  EXPECT_EQ((*closed)[0].step, 1);
  EXPECT_THAT((*closed)[0].workers, ElementsAre(1u, 2u));  // ascending, whatever the order
  EXPECT_EQ((*closed)[1].step, 2);
  EXPECT_EQ(m.completed_steps(), 1);
}

TEST(StepMachineTest, FixedDeadlineClosesWithWhoeverSent) {
  StepMachine m = Running(2);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  EXPECT_TRUE(m.Tick(At(9.9)).empty());
  auto closed = m.Tick(At(10));
  ASSERT_THAT(Kinds(closed), ElementsAre(Kind::kCloseStep, Kind::kOpenStep));
  EXPECT_THAT(closed[0].workers, ElementsAre(1u));
  EXPECT_THAT(closed[0].reason, HasSubstr("1 of 2"));
  EXPECT_EQ(m.members()[1].missed_in_a_row, 1);
}

TEST(StepMachineTest, LatePayloadIsRejectedAndNamesItsStep) {
  StepMachine m = Running(2);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  m.Tick(At(10));
  auto late = m.Payload(2, 1, At(11));
  ASSERT_TRUE(late.ok());
  ASSERT_THAT(Kinds(*late), ElementsAre(Kind::kRejectLate));
  EXPECT_EQ((*late)[0].worker, 2u);
  EXPECT_EQ((*late)[0].step, 1);
  // Its payload for the open step still counts.
  ASSERT_TRUE(m.Payload(1, 2, At(12)).ok());
  EXPECT_THAT(Kinds(*m.Payload(2, 2, At(12))), ElementsAre(Kind::kCloseStep, Kind::kOpenStep));
}

TEST(StepMachineTest, EvictsAfterMaxMissedStepsInARow) {
  StepMachine m = Running(2);
  for (int step = 1; step <= 2; ++step) {
    ASSERT_TRUE(m.Payload(1, step, At(10 * step - 5)).ok());
    auto a = m.Tick(At(10 * step));
    EXPECT_EQ(Find(a, Kind::kEvict), nullptr);
    ASSERT_TRUE(m.Heartbeat(2, At(10 * step)).ok());
  }
  ASSERT_TRUE(m.Payload(1, 3, At(25)).ok());
  auto third = m.Tick(At(30));
  const Action* evict = Find(third, Kind::kEvict);
  ASSERT_NE(evict, nullptr);
  EXPECT_EQ(evict->worker, 2u);
  EXPECT_THAT(evict->reason, HasSubstr("missed 3 steps"));
  EXPECT_EQ(m.members().size(), 1u);
  // min_workers is 2: the run pauses instead of opening step 4.
  EXPECT_NE(Find(third, Kind::kPause), nullptr);
  EXPECT_EQ(Find(third, Kind::kOpenStep), nullptr);
}

// Missing steps evicts only a member that has sent no payload for heartbeat_timeout: with
// 1 s steps and a 30 s timeout, the 3rd missed step is not enough, the 30th is.
TEST(StepMachineTest, MissedStepsEvictOnlyAMemberWithoutPayloadForTheHeartbeatTimeout) {
  RunConfig c = Config();
  c.deadline.fixed = absl::Seconds(1);
  StepMachine m = Running(2, c);  // both active since kT0
  int evicted_at = 0;
  for (int step = 1; step <= 40 && evicted_at == 0; ++step) {
    ASSERT_TRUE(m.Payload(1, step, At(step - 0.5)).ok());
    ASSERT_TRUE(m.Heartbeat(2, At(step - 0.5)).ok());
    const Action* evict = Find(m.Tick(At(step)), Kind::kEvict);
    if (evict != nullptr) {
      EXPECT_EQ(evict->worker, 2u);
      EXPECT_THAT(evict->reason, HasSubstr("missed 30 steps in a row, no payload for 30s"));
      evicted_at = step;
    }
  }
  EXPECT_EQ(evicted_at, 30);
}

TEST(StepMachineTest, AContributionResetsTheMissedCount) {
  StepMachine m = Running(2);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  m.Tick(At(10));  // 2 missed step 1
  ASSERT_TRUE(m.Payload(1, 2, At(11)).ok());
  ASSERT_TRUE(m.Payload(2, 2, At(12)).ok());  // 2 contributed to step 2
  EXPECT_EQ(m.members()[1].missed_in_a_row, 0);
  EXPECT_EQ(m.members()[1].contributions_missed, 1);
}

// A worker slower than the deadline sends every payload late: it is working, not silent, so
// it stays a member (its contributions kept in its momentum) however many steps it misses.
TEST(StepMachineTest, ALatePayloadIsNotSilenceAndClearsTheMissedCount) {
  StepMachine m = Running(2);  // max_missed_steps 3
  for (int step = 1; step <= 6; ++step) {
    ASSERT_TRUE(m.Payload(1, step, At(10 * step - 5)).ok());
    auto closed = m.Tick(At(10 * step));
    EXPECT_EQ(Find(closed, Kind::kEvict), nullptr) << "step " << step;
    EXPECT_EQ(m.members()[1].missed_in_a_row, 1);
    auto late = m.Payload(2, step, At(10 * step + 1));
    ASSERT_TRUE(late.ok());
    EXPECT_THAT(Kinds(*late), ElementsAre(Kind::kRejectLate));
    EXPECT_EQ(m.members()[1].missed_in_a_row, 0);
  }
  EXPECT_EQ(m.members().size(), 2u);
  EXPECT_EQ(m.members()[1].contributions_missed, 6);
}

TEST(StepMachineTest, SilentMemberIsEvictedAndTheStepCompletesWithoutIt) {
  RunConfig c = Config();
  c.deadline.fixed = absl::Seconds(100);
  StepMachine m = Running(2, c);
  ASSERT_TRUE(m.Payload(1, 1, At(20)).ok());
  auto a = m.Tick(At(31));  // worker 2 last seen at 0, timeout 30 s
  ASSERT_THAT(Kinds(a), ElementsAre(Kind::kEvict, Kind::kCloseStep, Kind::kPause));
  EXPECT_EQ(a[0].worker, 2u);
  EXPECT_THAT(a[1].workers, ElementsAre(1u));
}

TEST(StepMachineTest, LeaverIsRemovedAtOnceAndTheRunResumesWhenWorkersReturn) {
  StepMachine m = Running(2);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  auto left = m.Leave(2, At(2), "disconnected");
  ASSERT_THAT(Kinds(left), ElementsAre(Kind::kCloseStep, Kind::kPause));
  EXPECT_THAT(left[0].workers, ElementsAre(1u));
  EXPECT_TRUE(m.paused());
  auto back = m.Join("w2", At(5));  // the name is free again
  ASSERT_TRUE(back.ok());
  EXPECT_THAT(Kinds(back->actions), ElementsAre(Kind::kRequestState));
  auto resumed = m.StateTransferred(back->id, At(6));
  ASSERT_THAT(Kinds(*resumed), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ((*resumed)[1].step, 2);
  EXPECT_THAT((*resumed)[1].workers, ElementsAre(1u, back->id));
}

TEST(StepMachineTest, JoinersAreAdmittedAtStepBoundaries) {
  StepMachine m = Running(1);
  auto joined = m.Join("late", At(1));
  EXPECT_THAT(Kinds(joined->actions), ElementsAre(Kind::kRequestState));
  EXPECT_TRUE(m.StateTransferred(joined->id, At(2))->empty());  // step 1 still open
  EXPECT_EQ(m.Payload(joined->id, 1, At(2)).status().code(), absl::StatusCode::kFailedPrecondition);
  auto closed = m.Payload(1, 1, At(3));
  ASSERT_THAT(Kinds(*closed), ElementsAre(Kind::kCloseStep, Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ((*closed)[1].worker, joined->id);
  EXPECT_EQ((*closed)[1].step, 2);
  EXPECT_THAT((*closed)[2].workers, ElementsAre(1u, joined->id));
}

TEST(StepMachineTest, DonorsAreTakenInTurn) {
  StepMachine m = Running(3);
  std::vector<WorkerId> donors;
  for (int i = 0; i < 3; ++i) {
    auto j = m.Join("new" + std::to_string(i), At(1));
    donors.push_back(j->actions[0].donor);
  }
  std::sort(donors.begin(), donors.end());
  EXPECT_THAT(donors, ElementsAre(1u, 2u, 3u));
}

TEST(StepMachineTest, ADonorLeavingMidTransferIsReplaced) {
  StepMachine m = Running(2);
  auto j = m.Join("joiner", At(1));
  const WorkerId donor = j->actions[0].donor;
  const WorkerId other = donor == 1 ? 2 : 1;
  auto left = m.Leave(donor, At(2), "gone");
  const Action* retry = Find(left, Kind::kRequestState);
  ASSERT_NE(retry, nullptr);
  EXPECT_EQ(retry->worker, j->id);
  EXPECT_EQ(retry->donor, other);
}

TEST(StepMachineTest, ResyncedWorkerFinishesTheOpenStepThenReceivesParametersAgain) {
  StepMachine m = Running(3);
  auto resync = m.Resync(3, {3}, At(1));
  ASSERT_TRUE(resync.ok()) << resync.status();
  ASSERT_THAT(Kinds(*resync), ElementsAre(Kind::kRequestState));
  EXPECT_EQ((*resync)[0].worker, 3u);
  EXPECT_NE((*resync)[0].donor, 3u);
  // Its payload for the open step still counts.
  for (WorkerId w : {1u, 2u, 3u}) ASSERT_TRUE(m.Payload(w, 1, At(2)).ok());
  // Without it the run is below its 3 workers and pauses; it returns at the boundary after its
  // parameters arrive, and step 2 opens with all three.
  EXPECT_EQ(m.open_step(), std::nullopt);
  EXPECT_TRUE(m.paused());
  auto back = m.StateTransferred(3, At(3));
  ASSERT_TRUE(back.ok());
  ASSERT_THAT(Kinds(*back), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ((*back)[0].worker, 3u);
  EXPECT_THAT((*back)[1].workers, ElementsAre(1u, 2u, 3u));
  EXPECT_EQ(m.open_step(), 2);
}

TEST(StepMachineTest, ResyncMovesJoinersAwayFromASuspectDonor) {
  StepMachine m = Running(2);
  auto joined = m.Join("joiner", At(1));
  ASSERT_TRUE(joined.ok());
  const WorkerId donor = joined->actions[0].donor;
  const WorkerId other = donor == 1 ? 2 : 1;
  auto resync = m.Resync(donor, {donor}, At(2));
  ASSERT_TRUE(resync.ok()) << resync.status();
  ASSERT_THAT(Kinds(*resync), ElementsAre(Kind::kRequestState, Kind::kRequestState));
  for (const Action& a : *resync) EXPECT_EQ(a.donor, other) << ActionToString(a);
  EXPECT_EQ((*resync)[1].worker, joined->id);
}

TEST(StepMachineTest, NothingTimesOutAfterTheRunFinished) {
  RunConfig c = Config();
  c.total_steps = 1;
  StepMachine m = Running(1, c);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  ASSERT_TRUE(m.finished());
  EXPECT_THAT(m.Tick(At(1000)), ElementsAre());
}

TEST(StepMachineTest, ResyncNeedsADonorOutsideTheSuspects) {
  StepMachine m = Running(2);
  EXPECT_EQ(m.Resync(1, {1, 2}, At(1)).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.Resync(9, {}, At(1)).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(m.Resync(2, {2}, At(1)).ok());
  EXPECT_EQ(m.Resync(2, {2}, At(1)).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(StepMachineTest, JoinerBecomesTheSeedWhenNoHolderIsLeft) {
  StepMachine m = Running(1);
  auto j = m.Join("joiner", At(1));
  auto left = m.Leave(1, At(2), "gone");
  // Nobody holds the parameters: the joiner's are the run's from now on.
  ASSERT_THAT(Kinds(left), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ(left[0].worker, j->id);
  EXPECT_EQ(left[1].step, 1);  // step 1 never closed: it opens again
}

// With no holder left, a joiner whose own parameters are older than the run's must not become
// the seed: it is evicted and joins again as a would-be seed; one that is current seeds.
TEST(StepMachineTest, AJoinerLeftWithoutDonorSeedsOnlyIfItsParametersAreCurrent) {
  StepMachine m = Running(1);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());  // step 1 done
  auto fresh = m.Join("fresh", At(2), /*resume_step=*/0);
  auto current = m.Join("current", At(2), /*resume_step=*/1);
  ASSERT_TRUE(fresh.ok() && current.ok());
  auto left = m.Leave(1, At(3), "gone");
  // "current" (joined second) is taken first: it seeds, and "fresh" gets its parameters.
  ASSERT_THAT(Kinds(left), ElementsAre(Kind::kRequestState, Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ(left[0].worker, fresh->id);
  EXPECT_EQ(left[0].donor, current->id);
  EXPECT_EQ(left[1].worker, current->id);
  EXPECT_EQ(left[2].step, 2);

  auto left_again = m.Leave(current->id, At(4), "gone");
  ASSERT_THAT(Kinds(left_again), ElementsAre(Kind::kEvict, Kind::kPause));
  EXPECT_EQ(left_again[0].worker, fresh->id);
  EXPECT_EQ(left_again[0].evict_cause, Action::EvictCause::kNoDonor);
  EXPECT_THAT(left_again[0].reason, HasSubstr("its own are of step 0"));
  EXPECT_TRUE(m.members().empty());
}

// Found by coordinator_fuzz: a donor and its joiner fall silent together; the donor's eviction
// leaves the joiner without a donor, so it goes first (no_donor), and only once.
TEST(StepMachineTest, ASilentDonorAndItsSilentJoinerAreEvictedOnce) {
  StepMachine m = Running(1);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  ASSERT_TRUE(m.Join("joiner", At(1), /*resume_step=*/0).ok());
  auto a = m.Tick(At(40));
  ASSERT_THAT(Kinds(a), ElementsAre(Kind::kEvict, Kind::kEvict, Kind::kPause));
  EXPECT_EQ(a[0].worker, 1u);
  EXPECT_EQ(a[0].evict_cause, Action::EvictCause::kSilent);
  EXPECT_EQ(a[1].worker, 2u);
  EXPECT_EQ(a[1].evict_cause, Action::EvictCause::kNoDonor);
  EXPECT_TRUE(m.members().empty());
}

RunConfig StaleSeedConfig() {
  RunConfig c = Config(1);
  c.stale_seed_grace = absl::Seconds(30);
  c.heartbeat_timeout = absl::Seconds(15);
  return c;
}

// After a restart the run had completed 10 steps. Workers holding steps 5 and 3 ask first: they
// wait for the grace, in case one holding step 10 comes back; then the most current of them
// seeds and the other receives its parameters.
TEST(StepMachineTest, AStaleSeedWaitsForTheGraceThenTheMostCurrentOneSeeds) {
  StepMachine m(StaleSeedConfig(), /*completed_steps=*/10, /*resumed=*/true);
  auto first = m.Join("five", kT0, /*resume_step=*/5);
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(first.status().message(), HasSubstr("parameters are of step 5: waiting 30s more"));
  EXPECT_EQ(m.Join("three", At(10), 3).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(m.Join("five", At(20), 5).status().code(), absl::StatusCode::kUnavailable);
  // The grace is over, but "five" is more current than "three" and still asking.
  auto three = m.Join("three", At(30), 3);
  EXPECT_EQ(three.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(three.status().message(), HasSubstr("worker 'five', at step 5, is more current"));
  EXPECT_TRUE(m.members().empty());
  auto five = m.Join("five", At(31), 5);
  ASSERT_TRUE(five.ok()) << five.status();
  ASSERT_THAT(Kinds(five->actions), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ(five->actions[1].step, 11);  // the count stays; the coordinator reports 5 undone
  EXPECT_EQ(m.completed_steps(), 10);
  auto later = m.Join("three", At(32), 3);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_THAT(Kinds(later->actions), ElementsAre(Kind::kRequestState));
}

TEST(StepMachineTest, ACurrentWorkerSeedsAtOnceDuringTheGrace) {
  StepMachine m(StaleSeedConfig(), 10, /*resumed=*/true);
  EXPECT_EQ(m.Join("stale", kT0, 4).status().code(), absl::StatusCode::kUnavailable);
  auto current = m.Join("current", At(5), 10);
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_THAT(Kinds(current->actions), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  auto stale = m.Join("stale", At(6), 4);
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_THAT(Kinds(stale->actions), ElementsAre(Kind::kRequestState));
}

// A more current worker that stopped asking (for heartbeat_timeout) no longer holds the others
// back; and every time the run is left without a holder, the grace starts again.
TEST(StepMachineTest, TheGraceForgetsWorkersThatStoppedAskingAndStartsAgainEachTime) {
  StepMachine m(StaleSeedConfig(), 10, /*resumed=*/true);
  EXPECT_FALSE(m.Join("five", kT0, 5).ok());
  EXPECT_FALSE(m.Join("three", At(1), 3).ok());
  EXPECT_FALSE(m.Join("three", At(15), 3).ok());  // "five" asked 15 s ago: still counted
  auto three = m.Join("three", At(31), 3);        // 31 s since "five" asked
  ASSERT_TRUE(three.ok()) << three.status();

  ASSERT_TRUE(m.Payload(three->id, 11, At(32)).ok());
  m.Leave(three->id, At(100), "gone");
  EXPECT_FALSE(m.Join("three", At(101), 3).ok());  // behind step 11: a new grace
  EXPECT_FALSE(m.Join("three", At(130), 3).ok());
  EXPECT_TRUE(m.Join("three", At(131), 3).ok());
}

TEST(StepMachineTest, AdaptiveDeadlineIsMedianPlusKMadWithinFloorAndCeiling) {
  RunConfig c = Config();
  c.deadline.kind = DeadlinePolicy::Kind::kAdaptive;
  c.deadline.mad_multiplier = 5;
  c.deadline.floor = absl::Seconds(2);
  c.deadline.ceiling = absl::Seconds(60);
  StepMachine m = Running(1, c);
  EXPECT_EQ(m.StepBudget(), absl::Seconds(60));  // nothing known yet: the ceiling
  double t = 0;
  for (double d : {1.0, 2.0, 3.0}) {  // step durations 1, 2, 3 s
    const int64_t step = *m.open_step();
    t += d;
    ASSERT_TRUE(m.Payload(1, step, At(t)).ok());
  }
  // median 2 s, MAD 1 s: 2 + 5 * 1 = 7 s.
  EXPECT_EQ(m.StepBudget(), absl::Seconds(7));
  EXPECT_EQ(m.deadline(), At(t) + absl::Seconds(7));
  for (int i = 0; i < 20; ++i) {  // steady 0.1 s steps: the floor
    t += 0.1;
    ASSERT_TRUE(m.Payload(1, *m.open_step(), At(t)).ok());
  }
  EXPECT_EQ(m.StepBudget(), absl::Seconds(2));
}

TEST(StepMachineTest, NoPayloadAtTheDeadlineReopensTheSameStep) {
  StepMachine m = Running(2);
  auto a = m.Tick(At(10));
  ASSERT_THAT(Kinds(a), ElementsAre(Kind::kOpenStep));
  EXPECT_EQ(a[0].step, 1);
  EXPECT_EQ(m.completed_steps(), 0);
}

TEST(StepMachineTest, FinishesAfterTotalSteps) {
  RunConfig c = Config();
  c.total_steps = 2;
  StepMachine m = Running(1, c);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  auto last = m.Payload(1, 2, At(2));
  ASSERT_THAT(Kinds(*last), ElementsAre(Kind::kCloseStep, Kind::kFinish));
  EXPECT_TRUE(m.finished());
  EXPECT_EQ(m.Join("x", At(3)).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(StepMachineTest, ResumesAfterTheCompletedSteps) {
  StepMachine m(Config(1), /*completed_steps=*/10);
  auto j = m.Join("a", kT0, /*resume_step=*/10);
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_THAT(Kinds(j->actions), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ(j->actions[1].step, 11);
}

// A worker that holds no step's parameters would reset a trained run if it became the seed:
// it is told to come back (UNAVAILABLE) until a member holds the run's parameters, and then
// receives them like any joiner.
TEST(StepMachineTest, UntrainedWorkerCannotSeedATrainedRun) {
  StepMachine m(Config(1), /*completed_steps=*/10, /*resumed=*/true);
  auto fresh = m.Join("new", kT0, /*resume_step=*/0);
  EXPECT_EQ(fresh.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(fresh.status().message(), HasSubstr("no member holds its parameters"));
  EXPECT_TRUE(m.members().empty());
  ASSERT_TRUE(m.Join("old", kT0, /*resume_step=*/10).ok());
  auto later = m.Join("new", At(1), /*resume_step=*/0);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_NE(Find(later->actions, Kind::kRequestState), nullptr);

  // The same once every member of a live run has left.
  StepMachine live = Running(1);
  ASSERT_TRUE(live.Payload(1, 1, At(1)).ok());
  EXPECT_EQ(live.completed_steps(), 1);
  live.Leave(1, At(2), "gone");
  EXPECT_EQ(live.Join("new", At(3)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_OK(live.Join("w1", At(3), /*resume_step=*/1));
}

TEST(StepMachineTest, ResumedSeedOneStepAheadCompletesThatStep) {
  StepMachine m(Config(1), /*completed_steps=*/10, /*resumed=*/true);
  auto j = m.Join("a", kT0, /*resume_step=*/11);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(m.completed_steps(), 11);
  ASSERT_THAT(Kinds(j->actions), ElementsAre(Kind::kWelcome, Kind::kOpenStep));
  EXPECT_EQ(j->actions[1].step, 12);
}

TEST(StepMachineTest, OnlyAResumedSeedExactlyOneStepAheadMovesTheRun) {
  struct Case {
    bool resumed;
    int64_t seed_step;
    const char* why;
  };
  RunConfig no_grace = Config(1);
  no_grace.stale_seed_grace = absl::ZeroDuration();  // a stale seed is taken at once
  for (const Case& c :
       {Case{false, 11, "a live run's workers are never ahead of it"},
        Case{false, 9, "nor behind it but for a worker that left"},
        Case{true, 12, "a save is at most one step behind"},
        Case{true, 10, "the seed is where the save is"},
        Case{true, 3, "the seed is far behind: its parameters win, the count stays"}}) {
    StepMachine m(no_grace, 10, c.resumed);
    ASSERT_TRUE(m.Join("a", kT0, c.seed_step).ok());
    EXPECT_EQ(m.completed_steps(), 10) << c.why;
    EXPECT_EQ(m.open_step(), 11) << c.why;
  }
  // Only the first worker after the resume is its seed.
  StepMachine m(Config(2), 10, /*resumed=*/true);
  ASSERT_TRUE(m.Join("a", kT0, 10).ok());
  ASSERT_TRUE(m.Join("b", kT0, 11).ok());
  EXPECT_EQ(m.completed_steps(), 10);
}

TEST(StepMachineTest, ResumedSeedOneStepBehindRunsThatStepAgain) {
  StepMachine m(Config(1), /*completed_steps=*/10, /*resumed=*/true);
  auto j = m.Join("a", kT0, /*resume_step=*/9);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(m.completed_steps(), 9);
  EXPECT_EQ(m.open_step(), 10);
  // A worker whose parameters include no step is a new one, not one a step behind: it cannot
  // be the seed at all.
  StepMachine fresh(Config(1), /*completed_steps=*/1, /*resumed=*/true);
  EXPECT_EQ(fresh.Join("a", kT0, /*resume_step=*/0).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(fresh.completed_steps(), 1);
}

TEST(StepMachineTest, ResumedSeedAtTheLastStepFinishesTheRun) {
  RunConfig c = Config(1);
  StepMachine m(c, c.total_steps - 1, /*resumed=*/true);
  EXPECT_EQ(m.Join("a", kT0, c.total_steps).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(m.finished());
  EXPECT_EQ(m.completed_steps(), c.total_steps);
}

// A donor that stays (its heartbeats arrive) but whose transfer stops moving is replaced when
// someone else can donate; progress keeps it; with nobody else, the joiner keeps waiting.
TEST(StepMachineTest, StalledTransferMovesToAnotherDonor) {
  StepMachine m = Running(2);  // active 1 and 2, step 1 open
  auto c = m.Join("c", kT0);
  ASSERT_TRUE(c.ok());
  const Action* request = Find(c->actions, Kind::kRequestState);
  ASSERT_NE(request, nullptr);
  const WorkerId first = request->donor;
  const auto alive = [&m](double t) {
    for (WorkerId id : {1u, 2u, 3u}) ASSERT_TRUE(m.Heartbeat(id, At(t)).ok());
  };
  alive(20);
  m.StateProgress(c->id, At(20));  // a frame went through
  alive(45);
  EXPECT_EQ(Find(m.Tick(At(45)), Kind::kRequestState), nullptr);  // 25 s since: still moving
  alive(51);
  std::vector<Action> out = m.Tick(At(51));
  const Action* again = Find(out, Kind::kRequestState);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->worker, c->id);
  EXPECT_NE(again->donor, first);
  EXPECT_THAT(again->reason, HasSubstr("made no progress for 31s"));
  EXPECT_EQ(Find(out, Kind::kEvict), nullptr);
  // The new donor finishes the transfer.
  ASSERT_TRUE(m.StateTransferred(c->id, At(52)).ok());

  StepMachine solo = Running(1);
  auto b = solo.Join("b", kT0);
  ASSERT_TRUE(b.ok());
  for (WorkerId id : {1u, 2u}) ASSERT_TRUE(solo.Heartbeat(id, At(40)).ok());
  EXPECT_EQ(Find(solo.Tick(At(40)), Kind::kRequestState), nullptr);
}

TEST(StepMachineTest, RefusesBadEvents) {
  StepMachine m = Running(2);
  EXPECT_EQ(m.Payload(1, 5, At(1)).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(m.Payload(1, 1, At(1)).ok());
  EXPECT_EQ(m.Payload(1, 1, At(1)).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m.Payload(9, 1, At(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.Heartbeat(9, At(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.StateTransferred(1, At(1)).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.Join("w1", At(1)).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(m.Leave(9, At(1), "unknown").empty());
}

TEST(StepMachineTest, RefusesJoinersBeyondMaxWorkers) {
  RunConfig c = Config();
  c.max_workers = 2;
  StepMachine m(c);
  ASSERT_TRUE(m.Join("a", kT0).ok());
  ASSERT_TRUE(m.Join("b", kT0).ok());
  auto third = m.Join("c", kT0);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("2 workers"));
}

}  // namespace
}  // namespace demod
