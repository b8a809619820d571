#include "server/run_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

v1::TensorSpec Tensor(const std::string& name, std::vector<int64_t> shape, v1::DType dtype) {
  v1::TensorSpec spec;
  spec.set_name(name);
  for (int64_t d : shape) spec.add_shape(d);
  spec.set_dtype(dtype);
  return spec;
}

MembershipEvent Event(int64_t step, const std::string& worker, const std::string& event,
                      const std::string& reason = "") {
  return MembershipEvent{step, 1'700'000'000'000 + step, worker, event, reason};
}

// Every field away from its default, so a field that is not stored would show.
PersistedRun FullRun() {
  PersistedRun run;
  RunConfig& c = run.config;
  c.run_id = "gpt-small.7";
  c.optimizer.lr = {3e-4, 100, 0.05};
  c.optimizer.compression_decay = 0.99;
  c.optimizer.compression_topk = 16;
  c.optimizer.compression_chunk = 32;
  c.optimizer.weight_decay = 0.1;
  c.optimizer.value_encoding = ValueEncoding::kSign;
  c.min_workers = 2;
  c.max_workers = 8;
  c.total_steps = 5000;
  c.fingerprint_interval = 25;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = absl::Milliseconds(12500);
  c.deadline.mad_multiplier = 4;
  c.deadline.window = 10;
  c.deadline.floor = absl::Milliseconds(500);
  c.deadline.ceiling = absl::Seconds(90);
  c.max_missed_steps = 5;
  c.heartbeat_timeout = absl::Seconds(7);
  c.max_frame_bytes = 1 << 18;
  run.completed_steps = 1234;
  run.tensors = {Tensor("wte", {50304, 768}, v1::DTYPE_BFLOAT16),
                 Tensor("ln.weight", {768}, v1::DTYPE_FLOAT32),
                 Tensor("scale", {}, v1::DTYPE_FLOAT64), Tensor("h", {2, 3, 4}, v1::DTYPE_FLOAT16)};
  run.history = {Event(0, "alpha", "join"), Event(3, "beta", "join"),
                 Event(900, "beta", "evict", "missed 5 steps in a row"),
                 Event(1200, "alpha", "leave", "shutdown \"requested\"\nby operator é")};
  return run;
}

void ExpectSameRun(const PersistedRun& actual, const PersistedRun& expected) {
  EXPECT_EQ(RunConfigToJson(actual.config), RunConfigToJson(expected.config));
  EXPECT_EQ(actual.completed_steps, expected.completed_steps);
  ASSERT_EQ(actual.tensors.size(), expected.tensors.size());
  for (size_t i = 0; i < actual.tensors.size(); ++i) {
    EXPECT_EQ(actual.tensors[i].SerializeAsString(), expected.tensors[i].SerializeAsString())
        << "tensor " << i << ": " << actual.tensors[i].ShortDebugString() << " vs "
        << expected.tensors[i].ShortDebugString();
  }
  ASSERT_EQ(actual.history.size(), expected.history.size());
  for (size_t i = 0; i < actual.history.size(); ++i) {
    const MembershipEvent& a = actual.history[i];
    const MembershipEvent& e = expected.history[i];
    EXPECT_EQ(a.step, e.step) << i;
    EXPECT_EQ(a.unix_ms, e.unix_ms) << i;
    EXPECT_EQ(a.worker, e.worker) << i;
    EXPECT_EQ(a.event, e.event) << i;
    EXPECT_EQ(a.reason, e.reason) << i;
  }
}

class RunStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = absl::StrCat(::testing::TempDir(), "run_store_test_XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << pattern;
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code error;
    std::filesystem::permissions(dir_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, error);
    std::filesystem::remove_all(dir_, error);
  }

  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }

  RunStore OpenStore() { return ValueOrStop(RunStore::Open(dir_)); }

  static std::string ReadText(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  static void WriteText(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good()) << path;
  }

  // Saves FullRun(), replaces `from` with `to` in the file, and returns Load()'s status.
  absl::Status LoadEdited(const std::string& from, const std::string& to) {
    RunStore store = OpenStore();
    EXPECT_OK(store.Save(FullRun()));
    const std::string text = ReadText(Path("run.json"));
    EXPECT_THAT(text, HasSubstr(from));
    WriteText(Path("run.json"), absl::StrReplaceAll(text, {{from, to}}));
    absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
    return loaded.status();
  }

  std::string dir_;
};

TEST_F(RunStoreTest, EmptyDirectoryHoldsNoRun) {
  absl::StatusOr<std::optional<PersistedRun>> loaded = OpenStore().Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());
}

TEST_F(RunStoreTest, OpenCreatesMissingDirectories) {
  const std::string nested = Path("a/b/state");
  absl::StatusOr<RunStore> store = RunStore::Open(nested);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->dir(), nested);
  EXPECT_TRUE(std::filesystem::is_directory(nested));
  absl::StatusOr<std::optional<PersistedRun>> loaded = store->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());
}

TEST_F(RunStoreTest, SaveThenLoadGivesBackEverything) {
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(FullRun()).ok());
  absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  ExpectSameRun(**loaded, FullRun());
  EXPECT_FALSE(std::filesystem::exists(Path("run.json.tmp")));
}

TEST_F(RunStoreTest, RunBeforeTheFirstJoinRoundTrips) {
  PersistedRun run;
  run.config.run_id = "fresh";
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(run).ok());
  absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  ExpectSameRun(**loaded, run);
}

TEST_F(RunStoreTest, FileIsTheDocumentedFormat) {
  ASSERT_TRUE(OpenStore().Save(FullRun()).ok());
  const std::string text = ReadText(Path("run.json"));
  EXPECT_THAT(text, HasSubstr("\n  \"format\": \"demod-run-state\",\n  \"version\": 1,\n"));
  // The config is an object, not a string holding one.
  EXPECT_THAT(text, HasSubstr("\n  \"config\": {\"run_id\":\"gpt-small.7\",\"optimizer\":{"));
  EXPECT_THAT(text, HasSubstr("\n  \"completed_steps\": 1234,\n"));
  EXPECT_THAT(
      text, HasSubstr("\n    {\"name\":\"wte\",\"shape\":[50304,768],\"dtype\":\"bfloat16\"},\n"));
  EXPECT_THAT(text, HasSubstr("{\"name\":\"scale\",\"shape\":[],\"dtype\":\"float64\"}"));
  EXPECT_THAT(text, HasSubstr("{\"step\":900,\"unix_ms\":1700000000900,\"worker\":\"beta\","
                              "\"event\":\"evict\",\"reason\":\"missed 5 steps in a row\"}"));
}

TEST_F(RunStoreTest, SaveReplacesThePreviousRun) {
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(FullRun()).ok());
  PersistedRun later = FullRun();
  later.completed_steps = 1300;
  later.tensors.pop_back();
  later.history.push_back(Event(1299, "gamma", "join"));
  ASSERT_TRUE(store.Save(later).ok());

  // A second store on the same directory, as after a restart.
  absl::StatusOr<std::optional<PersistedRun>> loaded = OpenStore().Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  ExpectSameRun(**loaded, later);
}

TEST_F(RunStoreTest, KeepsOnlyTheLastEvents) {
  PersistedRun run = FullRun();
  run.history.clear();
  const int64_t total = RunStore::kMaxHistory + 5;
  for (int64_t i = 0; i < total; ++i) {
    run.history.push_back(Event(i, absl::StrCat("w", i), i % 2 == 0 ? "join" : "leave"));
  }
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(run).ok());
  absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  const std::vector<MembershipEvent>& history = (*loaded)->history;
  ASSERT_EQ(history.size(), RunStore::kMaxHistory);
  EXPECT_EQ(history.front().step, 5);
  EXPECT_EQ(history.front().worker, "w5");
  EXPECT_EQ(history.back().step, total - 1);
}

TEST_F(RunStoreTest, CorruptFileIsDataLossNamingIt) {
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(FullRun()).ok());
  const std::string path = Path("run.json");
  const std::string text = ReadText(path);
  for (const std::string& corrupt :
       {std::string(""), std::string("{not json"), text.substr(0, text.size() / 2),
        std::string("[1, 2]"), std::string("\"demod-run-state\"")}) {
    WriteText(path, corrupt);
    absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << corrupt;
    EXPECT_THAT(loaded.status().message(), HasSubstr(path)) << corrupt;
  }
}

TEST_F(RunStoreTest, UnknownVersionIsDataLossSayingSo) {
  const absl::Status status = LoadEdited("\"version\": 1,", "\"version\": 2,");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr(Path("run.json")));
  EXPECT_THAT(status.message(), HasSubstr("unsupported run state version 2; this build reads "
                                          "version 1"));
}

TEST_F(RunStoreTest, InvalidContentsAreDataLossNamingTheField) {
  struct Case {
    std::string from, to, message;
  };
  const std::vector<Case> cases = {
      {"\"demod-run-state\"", "\"something-else\"", "not a demod run state"},
      {"\"version\": 1,", "\"version\": \"1\",", "version: expected a 64-bit integer"},
      {"\"completed_steps\": 1234", "\"completed_steps\": -1", "completed_steps must be >= 0"},
      {"\"completed_steps\": 1234", "\"completed_steps\": 12.5", "completed_steps: expected"},
      {"\"completed_steps\": 1234", "\"completed_steps\": 99999999999999999999",
       "completed_steps: expected"},
      {"\"dtype\":\"float16\"", "\"dtype\":\"int8\"", "tensors[3].dtype: expected float32"},
      {"\"shape\":[768]", "\"shape\":[0]", "tensors: tensor 'ln.weight' has shape [0]"},
      {"\"name\":\"scale\"", "\"name\":\"wte\"", "tensors: tensor 'wte' appears twice"},
      {"\"total_steps\":5000", "\"total_steps\":0", "config: total_steps must be >= 1"},
      {"\"total_steps\":5000", "\"total_step\":5000", "config: unknown field 'total_step'"},
      {"\"step\":900,", "\"step\":-900,", "history[2]: step must be >= 0"},
      {"\"event\":\"evict\"", "\"event\":\"kick\"", "history[2]: event must be join"},
      {",\"reason\":\"missed 5 steps in a row\"", "", "missing field 'history[2].reason'"},
      {"\"completed_steps\": 1234,", "\"completed_steps\": 1234, \"extra\": 0,",
       "unknown field 'extra'"},
  };
  for (const Case& c : cases) {
    const absl::Status status = LoadEdited(c.from, c.to);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.to << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(absl::StrCat(Path("run.json"), ": "))) << c.to;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.to;
  }
}

TEST_F(RunStoreTest, LeftoverTempFileIsIgnoredAndReplaced) {
  const std::string temp = Path("run.json.tmp");
  WriteText(temp, "{\"format\": \"demod-run-st");  // a Save that crashed mid-write
  RunStore store = OpenStore();
  absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());

  ASSERT_TRUE(store.Save(FullRun()).ok());
  WriteText(temp, "garbage");  // and again, now beside a committed state
  loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  ExpectSameRun(**loaded, FullRun());

  PersistedRun later = FullRun();
  later.completed_steps = 2000;
  ASSERT_TRUE(store.Save(later).ok());
  EXPECT_FALSE(std::filesystem::exists(temp));
  loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->completed_steps, 2000);
}

TEST_F(RunStoreTest, SaveRejectsWhatLoadWouldRejectAndKeepsTheOldRun) {
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(FullRun()).ok());
  const std::string before = ReadText(Path("run.json"));

  PersistedRun bad = FullRun();
  bad.completed_steps = -1;
  EXPECT_EQ(store.Save(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = FullRun();
  bad.config.total_steps = 0;
  EXPECT_THAT(store.Save(bad).message(), HasSubstr("config: total_steps"));
  bad = FullRun();
  bad.tensors[0].set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_EQ(store.Save(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = FullRun();
  bad.history[1].event = "rejoin";
  EXPECT_THAT(store.Save(bad).message(), HasSubstr("history[1]: event"));
  bad = FullRun();
  bad.history[0].step = -1;
  EXPECT_EQ(store.Save(bad).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(ReadText(Path("run.json")), before);
}

TEST_F(RunStoreTest, FailedWriteKeepsTheOldRun) {
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(FullRun()).ok());
  // A directory where the temporary file goes makes the write fail, even for root.
  ASSERT_TRUE(std::filesystem::create_directory(Path("run.json.tmp")));
  PersistedRun later = FullRun();
  later.completed_steps = 2000;
  const absl::Status status = store.Save(later);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(Path("run.json.tmp")));
  absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->completed_steps, FullRun().completed_steps);
}

TEST_F(RunStoreTest, OpenRefusesAFile) {
  const std::string file = Path("not-a-dir");
  WriteText(file, "x");
  absl::StatusOr<RunStore> store = RunStore::Open(file);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr(file));

  store = RunStore::Open(absl::StrCat(file, "/state"));
  EXPECT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr(file));
}

TEST_F(RunStoreTest, UnwritableDirectoryIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes regardless of permissions";
  ASSERT_EQ(::chmod(dir_.c_str(), 0500), 0);
  absl::StatusOr<RunStore> store = RunStore::Open(dir_);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(store.status().message(), HasSubstr(dir_));

  store = RunStore::Open(Path("sub"));
  EXPECT_EQ(store.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(store.status().message(), HasSubstr(Path("sub")));
}

TEST_F(RunStoreTest, SaveIntoADirectoryThatBecameUnwritableFails) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes regardless of permissions";
  RunStore store = OpenStore();
  ASSERT_TRUE(store.Save(FullRun()).ok());
  ASSERT_EQ(::chmod(dir_.c_str(), 0500), 0);
  PersistedRun later = FullRun();
  later.completed_steps = 2000;
  const absl::Status status = store.Save(later);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr(dir_));
  absl::StatusOr<std::optional<PersistedRun>> loaded = store.Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->completed_steps, FullRun().completed_steps);
}

}  // namespace
}  // namespace demod
