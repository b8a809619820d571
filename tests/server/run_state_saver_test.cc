#include "server/run_state_saver.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/support/scoped_temp_dir.h"
#include "tests/support/status_matchers.h"

namespace demod {
namespace {

class RunStateSaverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<RunStore> store = RunStore::Open(dir_.path());
    ASSERT_TRUE(store.ok()) << store.status();
    store_.emplace(*std::move(store));
  }

  static PersistedRun Run(int64_t completed_steps) {
    PersistedRun run;
    run.config.run_id = "saver";
    run.completed_steps = completed_steps;
    return run;
  }

  int64_t StoredSteps() const {
    absl::StatusOr<std::optional<PersistedRun>> loaded = store_->Load();
    EXPECT_OK(loaded);
    return loaded.ok() && loaded->has_value() ? (*loaded)->completed_steps : -1;
  }

  std::function<void(const absl::Status&)> RecordErrors() {
    return [this](const absl::Status& status) {
      absl::MutexLock lock(&mu_);
      errors_.push_back(status);
    };
  }

  std::vector<absl::Status> Errors() {
    absl::MutexLock lock(&mu_);
    return errors_;
  }

  const ScopedTempDir dir_{"demod-saver"};
  std::optional<RunStore> store_;
  absl::Mutex mu_;
  std::vector<absl::Status> errors_;
};

TEST_F(RunStateSaverTest, SubmittedStateIsOnDiskOnceWaitForSavesReturns) {
  RunStateSaver saver(*store_, RecordErrors());
  saver.WaitForSaves();  // nothing submitted: returns at once
  EXPECT_EQ(StoredSteps(), -1);
  saver.Submit(Run(7));
  saver.WaitForSaves();
  EXPECT_EQ(StoredSteps(), 7);
  saver.Submit(Run(8));
  saver.WaitForSaves();
  EXPECT_EQ(StoredSteps(), 8);
  EXPECT_TRUE(Errors().empty());
}

TEST_F(RunStateSaverTest, LatestStateWinsAndTheDestructorWritesIt) {
  {
    RunStateSaver saver(*store_, RecordErrors());
    for (int64_t step = 1; step <= 200; ++step) saver.Submit(Run(step));
  }
  EXPECT_EQ(StoredSteps(), 200);
  EXPECT_TRUE(Errors().empty());
}

TEST_F(RunStateSaverTest, FailedSaveIsReportedAndTheStoreKeepsTheLastGoodState) {
  RunStateSaver saver(*store_, RecordErrors());
  saver.Submit(Run(3));
  saver.WaitForSaves();
  saver.Submit(Run(-1));  // a state RunStore refuses to write
  saver.WaitForSaves();
  ASSERT_EQ(Errors().size(), 1u);
  EXPECT_EQ(Errors()[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StoredSteps(), 3);
  saver.Submit(Run(4));
  saver.WaitForSaves();
  EXPECT_EQ(StoredSteps(), 4);
  EXPECT_EQ(Errors().size(), 1u);
}

}  // namespace
}  // namespace demod
