#include "common/run_config.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/expect_same_optimizer.h"
#include "tests/support/status_matchers.h"

namespace demod {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr double kPi = 3.14159265358979323846;

// The defaults with the one field that has no usable default.
RunConfig ValidConfig() {
  RunConfig config;
  config.run_id = "test-run";
  return config;
}

// A base whose every field differs from the defaults, to see which ones a file overrides.
RunConfig CustomBase() {
  RunConfig c;
  c.run_id = "base-run";
  c.optimizer.lr = {1e-3, 10, 0.5};
  c.optimizer.compression_decay = 0.9;
  c.optimizer.compression_topk = 8;
  c.optimizer.compression_chunk = 32;
  c.optimizer.weight_decay = 0.01;
  c.optimizer.value_encoding = ValueEncoding::kSign;
  c.optimizer.adam_beta1 = 0.8;
  c.optimizer.adam_beta2 = 0.99;
  c.optimizer.adam_eps = 1e-6;
  c.min_workers = 2;
  c.max_workers = 16;
  c.total_steps = 500;
  c.fingerprint_interval = 0;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = absl::Seconds(10);
  c.deadline.mad_multiplier = 3;
  c.deadline.window = 5;
  c.deadline.floor = absl::Seconds(1);
  c.deadline.ceiling = absl::Seconds(60);
  c.max_missed_steps = 4;
  c.heartbeat_timeout = absl::Seconds(5);
  c.stale_seed_grace = absl::Seconds(7);
  c.batch.global = 32;
  c.max_frame_bytes = 1 << 16;
  c.outbound_queue_steps = 5;
  return c;
}

void ExpectSameConfig(const RunConfig& actual, const RunConfig& expected) {
  EXPECT_EQ(actual.run_id, expected.run_id);
  ExpectSameOptimizer(actual.optimizer, expected.optimizer);
  EXPECT_EQ(actual.min_workers, expected.min_workers);
  EXPECT_EQ(actual.max_workers, expected.max_workers);
  EXPECT_EQ(actual.total_steps, expected.total_steps);
  EXPECT_EQ(actual.fingerprint_interval, expected.fingerprint_interval);
  EXPECT_EQ(actual.deadline.kind, expected.deadline.kind);
  EXPECT_EQ(actual.deadline.fixed, expected.deadline.fixed);
  EXPECT_EQ(actual.deadline.mad_multiplier, expected.deadline.mad_multiplier);
  EXPECT_EQ(actual.deadline.window, expected.deadline.window);
  EXPECT_EQ(actual.deadline.floor, expected.deadline.floor);
  EXPECT_EQ(actual.deadline.ceiling, expected.deadline.ceiling);
  EXPECT_EQ(actual.max_missed_steps, expected.max_missed_steps);
  EXPECT_EQ(actual.heartbeat_timeout, expected.heartbeat_timeout);
  EXPECT_EQ(actual.stale_seed_grace, expected.stale_seed_grace);
  EXPECT_EQ(actual.batch.global, expected.batch.global);
  EXPECT_EQ(actual.batch.balance, expected.batch.balance);
  EXPECT_EQ(actual.batch.weighting, expected.batch.weighting);
  EXPECT_EQ(actual.max_frame_bytes, expected.max_frame_bytes);
  EXPECT_EQ(actual.outbound_queue_steps, expected.outbound_queue_steps);
}

// Parses against ValidConfig() and returns the error message ("" when it parsed).
std::string ParseError(const std::string& text) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(text, ValidConfig());
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

// ---------------------------------------------------------------------------------------------
// Defaults

TEST(RunConfigDefaultsTest, DefaultsNeedOnlyARunId) {
  const absl::Status status = RunConfig{}.Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "run_id must be 1 to 64 characters from [A-Za-z0-9._-], not '.' or '..', got ''");
  EXPECT_OK(ValidConfig().Validate());
  EXPECT_OK(CustomBase().Validate());
}

TEST(RunConfigDefaultsTest, RunIdCannotNameAnotherDirectory) {
  for (const char* id : {".", ".."}) {
    RunConfig config = ValidConfig();
    config.run_id = id;
    EXPECT_THAT(std::string(config.Validate().message()), StartsWith("run_id must be")) << id;
  }
  RunConfig dotted = ValidConfig();
  dotted.run_id = "..a";
  EXPECT_OK(dotted.Validate());
}

TEST(RunConfigDefaultsTest, EmptyDocumentWithDefaultBaseNeedsARunId) {
  absl::StatusOr<RunConfig> config = ParseRunConfig("");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), StartsWith("run_id must be"));

  config = ParseRunConfig("run_id: r1\n");
  ASSERT_TRUE(config.ok()) << config.status();
  RunConfig expected;
  expected.run_id = "r1";
  ExpectSameConfig(*config, expected);
}

// ---------------------------------------------------------------------------------------------
// Parsing

TEST(ParseRunConfigTest, DocumentsWithoutFieldsKeepTheBase) {
  for (const char* text : {"", "\n", "# nothing here\n", "---\n", "{}", "  \n# a\n# b\n"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<RunConfig> config = ParseRunConfig(text, CustomBase());
    ASSERT_TRUE(config.ok()) << config.status();
    ExpectSameConfig(*config, CustomBase());
  }
}

// Every field set to a non-default value.
RunConfig EveryFieldExpected() {
  RunConfig c;
  c.run_id = "gpt2-small_v1.3";
  c.optimizer.lr.base_lr = 6e-4;
  c.optimizer.lr.warmup_steps = 100;
  c.optimizer.lr.final_factor = 0.05;
  c.optimizer.compression_decay = 0.99;
  c.optimizer.compression_topk = 16;
  c.optimizer.compression_chunk = 128;
  c.optimizer.weight_decay = 0.1;
  c.optimizer.value_encoding = ValueEncoding::kFloat16;
  c.optimizer.adam_beta1 = 0.7;
  c.optimizer.adam_beta2 = 0.98;
  c.optimizer.adam_eps = 1e-7;
  c.min_workers = 3;
  c.max_workers = 12;
  c.total_steps = 20000;
  c.fingerprint_interval = 50;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = absl::Milliseconds(7500);
  c.deadline.mad_multiplier = 2.5;
  c.deadline.window = 40;
  c.deadline.floor = absl::Milliseconds(500);
  c.deadline.ceiling = absl::Seconds(90);
  c.max_missed_steps = 6;
  c.heartbeat_timeout = absl::Milliseconds(2500);
  c.stale_seed_grace = absl::Seconds(45);
  c.batch.global = 96;
  c.batch.balance = true;
  c.batch.weighting = Weighting::kSamples;
  c.max_frame_bytes = 4 << 20;
  c.outbound_queue_steps = 12;
  return c;
}

TEST(ParseRunConfigTest, EveryFieldFromYaml) {
  constexpr char kYaml[] = R"(# a full run configuration
run_id: gpt2-small_v1.3
optimizer:
  lr:
    base_lr: 6e-4
    warmup_steps: 100
    final_factor: 0.05
  compression_decay: 0.99
  compression_topk: 16
  compression_chunk: 128
  weight_decay: 0.1
  value_encoding: f16
  algorithm: demo
  adam_beta1: 0.7
  adam_beta2: 0.98
  adam_eps: 1e-7
min_workers: 3
max_workers: 12
total_steps: 20000
fingerprint_interval: 50
deadline:
  kind: fixed
  fixed_s: 7.5
  mad_multiplier: 2.5
  window: 40
  floor_s: 0.5
  ceiling_s: 90
max_missed_steps: 6
heartbeat_timeout_s: 2.5
stale_seed_grace_s: 45
batch: {global: 96, balance: true, weighting: samples}
max_frame_bytes: 4194304
outbound_queue_steps: 12
)";
  absl::StatusOr<RunConfig> config = ParseRunConfig(kYaml, CustomBase());
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameConfig(*config, EveryFieldExpected());
}

TEST(ParseRunConfigTest, EveryFieldFromJson) {
  constexpr char kJson[] = R"({
	"run_id": "gpt2-small_v1.3",
	"optimizer": {
		"lr": {"base_lr": 6e-4, "warmup_steps": 100, "final_factor": 0.05},
		"compression_decay": 0.99,
		"compression_topk": 16,
		"compression_chunk": 128,
		"weight_decay": 0.1,
		"value_encoding": "f16",
		"algorithm": "demo", "adam_beta1": 0.7, "adam_beta2": 0.98, "adam_eps": 1e-7
	},
	"min_workers": 3,
	"max_workers": 12,
	"total_steps": 20000,
	"fingerprint_interval": 50,
	"deadline": {
		"kind": "fixed", "fixed_s": 7.5, "mad_multiplier": 2.5, "window": 40,
		"floor_s": 0.5, "ceiling_s": 90
	},
	"max_missed_steps": 6,
	"heartbeat_timeout_s": 2.5,
	"stale_seed_grace_s": 45,
	"batch": {"global": 96, "balance": true, "weighting": "samples"},
	"max_frame_bytes": 4194304,
	"outbound_queue_steps": 12
})";
  absl::StatusOr<RunConfig> config = ParseRunConfig(kJson, CustomBase());
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameConfig(*config, EveryFieldExpected());
}

// The weighting a run configuration file gives, on top of `base`.
Weighting WeightingOf(const std::string& text, RunConfig base = {}) {
  base.run_id = "r";
  absl::StatusOr<RunConfig> config = ParseRunConfig(text, base);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? config->batch.weighting : static_cast<Weighting>(-1);
}

TEST(ParseRunConfigTest, BalancedRunsWeighContributionsBySamplesUnlessTold) {
  EXPECT_EQ(WeightingOf("batch: {global: 8, balance: true}"), Weighting::kSamples);
  EXPECT_EQ(WeightingOf("batch: {global: 8, balance: true, weighting: equal}"), Weighting::kEqual);
  EXPECT_EQ(WeightingOf("batch: {global: 8}"), Weighting::kEqual);
  EXPECT_EQ(WeightingOf("batch: {weighting: samples}"), Weighting::kSamples);
  RunConfig base;
  base.batch = {8, true, Weighting::kSamples};
  // Switching balancing off in a file switches the weighting it implied back to equal.
  EXPECT_EQ(WeightingOf("batch: {balance: false}", base), Weighting::kEqual);
  EXPECT_EQ(WeightingOf("total_steps: 9", base), Weighting::kSamples);
}

TEST(ParseRunConfigTest, CompactJson) {
  absl::StatusOr<RunConfig> config =
      ParseRunConfig(R"({"run_id":"j","optimizer":{"lr":{"base_lr":1E-3}},"total_steps":7})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->run_id, "j");
  EXPECT_EQ(config->optimizer.lr.base_lr, 1e-3);
  EXPECT_EQ(config->total_steps, 7);
}

TEST(ParseRunConfigTest, PartialFileKeepsTheBaseValues) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(
      "optimizer: {lr: {warmup_steps: 0}, compression_topk: 4}\n"
      "deadline:\n"
      "  window: 7\n"
      "total_steps: 9\n",
      CustomBase());
  ASSERT_TRUE(config.ok()) << config.status();
  RunConfig expected = CustomBase();
  expected.optimizer.lr.warmup_steps = 0;
  expected.optimizer.compression_topk = 4;
  expected.deadline.window = 7;
  expected.total_steps = 9;
  ExpectSameConfig(*config, expected);
}

TEST(ParseRunConfigTest, NullSectionSetsNothing) {
  absl::StatusOr<RunConfig> config =
      ParseRunConfig("optimizer:\n  # lr: {base_lr: 1}\ndeadline: null\n", CustomBase());
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameConfig(*config, CustomBase());
}

TEST(ParseRunConfigTest, DeadlineKinds) {
  absl::StatusOr<RunConfig> config = ParseRunConfig("deadline: {kind: adaptive}", CustomBase());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->deadline.kind, DeadlinePolicy::Kind::kAdaptive);
  config = ParseRunConfig("deadline: {kind: fixed}", ValidConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->deadline.kind, DeadlinePolicy::Kind::kFixed);

  const std::string error = ParseError("deadline: {kind: Fixed}");
  EXPECT_THAT(error, HasSubstr("deadline.kind"));
  EXPECT_THAT(error, HasSubstr("'fixed' or 'adaptive'"));
  EXPECT_THAT(error, HasSubstr("'Fixed'"));
}

TEST(ParseRunConfigTest, ValueEncodings) {
  for (ValueEncoding e : {ValueEncoding::kFloat32, ValueEncoding::kBFloat16,
                          ValueEncoding::kFloat16, ValueEncoding::kSign}) {
    absl::StatusOr<RunConfig> config = ParseRunConfig(
        absl::StrCat("optimizer: {value_encoding: ", ValueEncodingName(e), "}"), ValidConfig());
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->optimizer.value_encoding, e);
  }
  const std::string error = ParseError("optimizer: {value_encoding: fp16}");
  EXPECT_THAT(error, StartsWith("optimizer.value_encoding: "));
  EXPECT_THAT(error, HasSubstr("'fp16'"));
  EXPECT_THAT(error, HasSubstr("f32, bf16, f16, sign"));
}

TEST(ParseRunConfigTest, DurationsAreSeconds) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(
      "heartbeat_timeout_s: 0.25\ndeadline: {fixed_s: 1e-3, floor_s: 3, ceiling_s: 3}",
      ValidConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->heartbeat_timeout, absl::Milliseconds(250));
  EXPECT_EQ(config->deadline.fixed, absl::Milliseconds(1));
  EXPECT_EQ(config->deadline.floor, absl::Seconds(3));
  EXPECT_EQ(config->deadline.ceiling, absl::Seconds(3));
}

TEST(ParseRunConfigTest, PlainScalarRunIdIsText) {
  absl::StatusOr<RunConfig> config = ParseRunConfig("run_id: 2024\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->run_id, "2024");
}

TEST(ParseRunConfigTest, TheResultIsValidated) {
  EXPECT_EQ(ParseError("min_workers: 0"), "min_workers must be >= 1, got 0");
  EXPECT_EQ(ParseError("optimizer: {compression_topk: 0}"),
            "optimizer.compression_topk must be >= 1, got 0");
  EXPECT_THAT(ParseError("optimizer: {lr: {base_lr: .nan}}"),
              StartsWith("optimizer.lr.base_lr must be finite and > 0, got nan"));
  EXPECT_THAT(ParseError("optimizer: {weight_decay: .inf}"),
              StartsWith("optimizer.weight_decay must be finite and >= 0, got inf"));
}

// ---------------------------------------------------------------------------------------------
// Parse errors

TEST(ParseRunConfigTest, UnknownFieldsNameTheirFullPath) {
  std::string error = ParseError("optimizer:\n  lr:\n    base: 1\n");
  EXPECT_THAT(error, StartsWith("unknown field 'optimizer.lr.base' (line 3, column 5)"));
  EXPECT_THAT(error,
              HasSubstr("valid fields of optimizer.lr: base_lr, warmup_steps, final_factor"));

  error = ParseError("run_id: x\nworkers: 3\n");
  EXPECT_THAT(error, StartsWith("unknown field 'workers' (line 2, column 1)"));
  EXPECT_THAT(error, HasSubstr("valid fields at the top level: run_id, optimizer,"));

  // A duration without its unit suffix is unknown, not silently read as something else.
  EXPECT_THAT(ParseError("deadline: {fixed: 30}"), StartsWith("unknown field 'deadline.fixed'"));
  EXPECT_THAT(ParseError(R"({"optimizer": {"topk": 3}})"),
              StartsWith("unknown field 'optimizer.topk'"));
  // Names are case-sensitive.
  EXPECT_THAT(ParseError("Run_Id: x"), StartsWith("unknown field 'Run_Id'"));
}

TEST(ParseRunConfigTest, DuplicateFields) {
  EXPECT_EQ(ParseError("total_steps: 5\ntotal_steps: 6\n"),
            "duplicate field 'total_steps' (line 2, column 1)");
  EXPECT_THAT(ParseError(R"({"deadline": {"window": 3, "window": 4}})"),
              StartsWith("duplicate field 'deadline.window'"));
}

TEST(ParseRunConfigTest, WrongTypesNameThePathAndTheExpectedType) {
  struct Case {
    std::string text;
    std::string path;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"total_steps: abc", "total_steps", "expected an integer, got 'abc'"},
      {"total_steps: 1.5", "total_steps", "expected an integer, got '1.5'"},
      {"total_steps: 1e3", "total_steps", "expected an integer"},
      {"total_steps: [1]", "total_steps", "expected an integer, got a sequence"},
      {"total_steps:", "total_steps", "expected an integer, got null"},
      {R"({"total_steps": "100"})", "total_steps", "expected an integer, got the quoted string"},
      {"total_steps: 99999999999999999999", "total_steps", "expected an integer"},
      {"max_frame_bytes: true", "max_frame_bytes", "expected an integer, got 'true'"},
      {"min_workers: 3000000000", "min_workers",
       "expected an integer in [-2147483648, 2147483647], got '3000000000'"},
      {"deadline: {window: 2.0}", "deadline.window", "expected an integer"},
      {"optimizer: {compression_chunk: x}", "optimizer.compression_chunk", "expected an integer"},
      {"optimizer: {lr: {warmup_steps: ten}}", "optimizer.lr.warmup_steps", "expected an integer"},
      {"optimizer: {lr: {base_lr: fast}}", "optimizer.lr.base_lr", "expected a number, got 'fast'"},
      {R"({"optimizer": {"weight_decay": "0.1"}})", "optimizer.weight_decay",
       "expected a number, got the quoted string \"0.1\""},
      {"deadline: {mad_multiplier: {a: 1}}", "deadline.mad_multiplier",
       "expected a number, got a mapping"},
      {"deadline: {fixed_s: [30]}", "deadline.fixed_s",
       "expected a finite number of seconds, got a sequence"},
      {"deadline: {floor_s: .nan}", "deadline.floor_s", "expected a finite number of seconds"},
      {"heartbeat_timeout_s: .inf", "heartbeat_timeout_s", "expected a finite number of seconds"},
      {"heartbeat_timeout_s: 15s", "heartbeat_timeout_s", "expected a finite number of seconds"},
      {"batch: {balance: yes}", "batch.balance", "expected true or false, got 'yes'"},
      {"batch: {weighting: tokens}", "batch.weighting",
       "expected 'equal' or 'samples', got 'tokens'"},
      {R"({"batch": {"balance": "true"}})", "batch.balance",
       "expected true or false, got the quoted string \"true\""},
      {"run_id: {a: 1}", "run_id", "expected a string, got a mapping"},
      {"run_id:", "run_id", "expected a string, got null"},
      {"optimizer: 5", "optimizer", "expected a mapping, got '5'"},
      {"optimizer: {lr: [1, 2]}", "optimizer.lr", "expected a mapping, got a sequence"},
      {"deadline: fixed", "deadline", "expected a mapping, got 'fixed'"},
      {"deadline: {kind: [fixed]}", "deadline.kind", "expected 'fixed' or 'adaptive'"},
      {"optimizer: {value_encoding: {x: 1}}", "optimizer.value_encoding", "expected a string"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    const std::string error = ParseError(c.text);
    EXPECT_THAT(error, StartsWith(c.path + ": "));
    EXPECT_THAT(error, HasSubstr(c.expected));
  }
}

TEST(ParseRunConfigTest, FieldErrorsCarryTheLineOfTheKey) {
  EXPECT_EQ(ParseError("run_id: x\noptimizer:\n  compression_topk: many\n"),
            "optimizer.compression_topk: expected an integer, got 'many' (line 3, column 3)");
}

TEST(ParseRunConfigTest, TopLevelMustBeAMapping) {
  EXPECT_THAT(ParseError("- a\n- b\n"),
              StartsWith("expected a mapping of fields at the top level, got a sequence"));
  EXPECT_THAT(ParseError("[1, 2]"), HasSubstr("got a sequence"));
  EXPECT_THAT(ParseError("hello"), HasSubstr("at the top level, got 'hello'"));
  EXPECT_THAT(ParseError("\"hello\""), HasSubstr("at the top level"));
}

// A ',' after the document's closing bracket made yaml-cpp 0.7 allocate without end (found by
// tests/fuzz/run_config_fuzz): it is a syntax error with a place, at once.
// yaml-cpp 0.7's LoadAll keeps finding empty documents after a parse that went wrong, and
// allocates one each time, without end (jbeder/yaml-cpp#1319): documents are counted, to two.
TEST(ParseRunConfigTest, TextOnWhichYamlLoadAllNeverEndsIsRefused) {
  for (const char* text : {",", ",\n", "\n,\n    "}) {
    absl::StatusOr<RunConfig> config = ParseRunConfig(text);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_FALSE(config.status().message().empty()) << text;
  }
}

TEST(ParseRunConfigTest, EntryAfterTheDocumentsClosingBracketIsASyntaxError) {
  EXPECT_EQ(ParseError(R"({"min_workers": 2},"total_steps": 3})"),
            "YAML syntax error (line 1, column 19): ',' after the document's closing bracket");
  EXPECT_THAT(ParseError("[1],2]"), HasSubstr("(line 1, column 4): ','"));
  // A quote inside a plain scalar opens nothing ("=a" is plain), so the early '}' is seen.
  EXPECT_THAT(ParseError(R"({"deadline": {=a": 1, "b": 2}}, "c": [1)"),
              HasSubstr("',' after the document's closing bracket"));
  EXPECT_THAT(ParseError("# config\n{min_workers: 2} # two\n  , total_steps: 3"),
              HasSubstr("(line 3, column 3): ','"));
  // Brackets and commas inside quotes or comments are not the document's.
  EXPECT_THAT(ParseError(R"({"run_id": "a}],b", "min_workers": 2} # }],)"),
              HasSubstr("got 'a}],b'"));  // read whole, then judged as a run id
  EXPECT_THAT(ParseError("{run_id: 'it''s}', min_workers: 2}"), Not(HasSubstr("closing bracket")));
}

TEST(ParseRunConfigTest, FieldNamesMustBeScalars) {
  EXPECT_THAT(ParseError("? [a, b]\n: 1\n"),
              StartsWith("field names must be strings, got a sequence at the top level"));
}

TEST(ParseRunConfigTest, SyntaxErrorsReportLineAndColumn) {
  EXPECT_EQ(ParseError("optimizer: [1, 2\ntotal_steps: 3\n"),
            "YAML syntax error (line 2, column 12): end of sequence flow not found");
  EXPECT_THAT(ParseError("run_id: x\ndeadline:\n  window: 3\n kind: fixed\n"),
              StartsWith("YAML syntax error (line 4, column 2): "));
  EXPECT_THAT(ParseError("run_id: a: b\n"), StartsWith("YAML syntax error (line 1, column 10): "));
  EXPECT_THAT(ParseError("{\"run_id\": \"x\"\n\"total_steps\": 3}"),
              StartsWith("YAML syntax error (line "));
  EXPECT_THAT(ParseError("a: *undefined\n"), StartsWith("YAML syntax error (line 1, column 4): "));
}

TEST(ParseRunConfigTest, OnlyOneDocument) {
  EXPECT_EQ(ParseError("run_id: a\n---\nrun_id: b\n"),
            "expected one YAML document, got at least 2");
}

// ---------------------------------------------------------------------------------------------
// Validation: one case per rule, each failing on exactly that rule.

struct ValidationCase {
  std::string name;
  std::function<void(RunConfig&)> mutate;
  std::string message;  // exact
};

TEST(RunConfigValidateTest, EachRuleNamesItsField) {
  using Kind = DeadlinePolicy::Kind;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<ValidationCase> cases = {
      {"run_id empty", [](RunConfig& c) { c.run_id = ""; },
       "run_id must be 1 to 64 characters from [A-Za-z0-9._-], not '.' or '..', got ''"},
      {"run_id space", [](RunConfig& c) { c.run_id = "my run"; },
       "run_id must be 1 to 64 characters from [A-Za-z0-9._-], not '.' or '..', got 'my run'"},
      {"run_id slash", [](RunConfig& c) { c.run_id = "a/b"; },
       "run_id must be 1 to 64 characters from [A-Za-z0-9._-], not '.' or '..', got 'a/b'"},
      {"run_id newline", [](RunConfig& c) { c.run_id = "a\nb"; },
       "run_id must be 1 to 64 characters from [A-Za-z0-9._-], not '.' or '..', got 'a\\nb'"},
      {"run_id too long", [](RunConfig& c) { c.run_id = std::string(65, 'a'); },
       absl::StrCat("run_id must be 1 to 64 characters from [A-Za-z0-9._-], not '.' or '..', got '",
                    std::string(64, 'a'), "...' (65 characters)")},
      {"base_lr zero", [](RunConfig& c) { c.optimizer.lr.base_lr = 0; },
       "optimizer.lr.base_lr must be finite and > 0, got 0"},
      {"base_lr negative", [](RunConfig& c) { c.optimizer.lr.base_lr = -1e-4; },
       "optimizer.lr.base_lr must be finite and > 0, got -0.0001"},
      {"base_lr inf", [&](RunConfig& c) { c.optimizer.lr.base_lr = inf; },
       "optimizer.lr.base_lr must be finite and > 0, got inf"},
      {"base_lr nan", [&](RunConfig& c) { c.optimizer.lr.base_lr = nan; },
       "optimizer.lr.base_lr must be finite and > 0, got nan"},
      {"warmup negative", [](RunConfig& c) { c.optimizer.lr.warmup_steps = -1; },
       "optimizer.lr.warmup_steps must be >= 0, got -1"},
      {"final_factor high", [](RunConfig& c) { c.optimizer.lr.final_factor = 1.5; },
       "optimizer.lr.final_factor must be in [0, 1], got 1.5"},
      {"final_factor negative", [](RunConfig& c) { c.optimizer.lr.final_factor = -0.1; },
       "optimizer.lr.final_factor must be in [0, 1], got -0.1"},
      {"final_factor nan", [&](RunConfig& c) { c.optimizer.lr.final_factor = nan; },
       "optimizer.lr.final_factor must be in [0, 1], got nan"},
      {"decay high", [](RunConfig& c) { c.optimizer.compression_decay = 1.01; },
       "optimizer.compression_decay must be in [0, 1], got 1.01"},
      {"decay negative", [](RunConfig& c) { c.optimizer.compression_decay = -0.5; },
       "optimizer.compression_decay must be in [0, 1], got -0.5"},
      {"topk", [](RunConfig& c) { c.optimizer.compression_topk = 0; },
       "optimizer.compression_topk must be >= 1, got 0"},
      {"chunk", [](RunConfig& c) { c.optimizer.compression_chunk = 0; },
       "optimizer.compression_chunk must be >= 1, got 0"},
      {"weight_decay negative", [](RunConfig& c) { c.optimizer.weight_decay = -0.01; },
       "optimizer.weight_decay must be finite and >= 0, got -0.01"},
      {"weight_decay nan", [&](RunConfig& c) { c.optimizer.weight_decay = nan; },
       "optimizer.weight_decay must be finite and >= 0, got nan"},
      {"value_encoding", [](RunConfig& c) { c.optimizer.value_encoding = ValueEncoding{9}; },
       "optimizer.value_encoding must be one of f32, bf16, f16, sign, got 9"},
      {"min_workers", [](RunConfig& c) { c.min_workers = 0; }, "min_workers must be >= 1, got 0"},
      {"max_workers below min",
       [](RunConfig& c) {
         c.min_workers = 4;
         c.max_workers = 3;
       },
       "max_workers must be >= min_workers (4), got 3"},
      {"max_workers limit", [](RunConfig& c) { c.max_workers = 4097; },
       "max_workers must be <= 4096, got 4097"},
      {"total_steps", [](RunConfig& c) { c.total_steps = 0; }, "total_steps must be >= 1, got 0"},
      {"fingerprint_interval", [](RunConfig& c) { c.fingerprint_interval = -1; },
       "fingerprint_interval must be >= 0, got -1"},
      {"deadline kind", [](RunConfig& c) { c.deadline.kind = static_cast<Kind>(7); },
       "deadline.kind must be fixed or adaptive, got 7"},
      {"fixed zero", [](RunConfig& c) { c.deadline.fixed = absl::ZeroDuration(); },
       "deadline.fixed_s must be finite and > 0, got 0"},
      {"fixed negative", [](RunConfig& c) { c.deadline.fixed = absl::Milliseconds(-1500); },
       "deadline.fixed_s must be finite and > 0, got -1.5"},
      {"fixed infinite", [](RunConfig& c) { c.deadline.fixed = absl::InfiniteDuration(); },
       "deadline.fixed_s must be finite and > 0, got inf"},
      {"mad_multiplier negative", [](RunConfig& c) { c.deadline.mad_multiplier = -1; },
       "deadline.mad_multiplier must be finite and >= 0, got -1"},
      {"mad_multiplier inf", [&](RunConfig& c) { c.deadline.mad_multiplier = inf; },
       "deadline.mad_multiplier must be finite and >= 0, got inf"},
      {"window", [](RunConfig& c) { c.deadline.window = 0; },
       "deadline.window must be >= 1, got 0"},
      {"floor zero", [](RunConfig& c) { c.deadline.floor = absl::ZeroDuration(); },
       "deadline.floor_s must be finite and > 0, got 0"},
      {"ceiling below floor", [](RunConfig& c) { c.deadline.ceiling = absl::Seconds(1); },
       "deadline.ceiling_s must be finite and >= deadline.floor_s (2), got 1"},
      {"ceiling infinite", [](RunConfig& c) { c.deadline.ceiling = absl::InfiniteDuration(); },
       "deadline.ceiling_s must be finite and >= deadline.floor_s (2), got inf"},
      {"max_missed_steps", [](RunConfig& c) { c.max_missed_steps = 0; },
       "max_missed_steps must be >= 1, got 0"},
      {"outbound_queue_steps", [](RunConfig& c) { c.outbound_queue_steps = 1; },
       "outbound_queue_steps must be >= 2, got 1"},
      {"heartbeat zero", [](RunConfig& c) { c.heartbeat_timeout = absl::ZeroDuration(); },
       "heartbeat_timeout_s must be finite and > 0, got 0"},
      {"balance without a global batch", [](RunConfig& c) { c.batch.balance = true; },
       "batch.global must be >= 1 with batch.balance, got 0"},
      {"negative global batch", [](RunConfig& c) { c.batch.global = -1; },
       "batch.global must be >= 0, got -1"},
      {"unknown weighting", [](RunConfig& c) { c.batch.weighting = static_cast<Weighting>(7); },
       "batch.weighting must be equal or samples, got 7"},
      {"stale seed grace negative", [](RunConfig& c) { c.stale_seed_grace = absl::Seconds(-1); },
       "stale_seed_grace_s must be finite and >= 0, got -1"},
      {"heartbeat negative", [](RunConfig& c) { c.heartbeat_timeout = absl::Seconds(-2); },
       "heartbeat_timeout_s must be finite and > 0, got -2"},
      {"frame too small", [](RunConfig& c) { c.max_frame_bytes = 4095; },
       "max_frame_bytes must be in [4096, 67108864], got 4095"},
      {"frame too large", [](RunConfig& c) { c.max_frame_bytes = (64 << 20) + 1; },
       "max_frame_bytes must be in [4096, 67108864], got 67108865"},
  };
  for (const ValidationCase& c : cases) {
    SCOPED_TRACE(c.name);
    RunConfig config = ValidConfig();
    c.mutate(config);
    const absl::Status status = config.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(), c.message);
  }
}

TEST(RunConfigValidateTest, BoundaryValuesAreAccepted) {
  const std::vector<std::pair<std::string, std::function<void(RunConfig&)>>> cases = {
      {"run_id 1 char", [](RunConfig& c) { c.run_id = "a"; }},
      {"run_id 64 chars", [](RunConfig& c) { c.run_id = std::string(64, 'z'); }},
      {"run_id every class", [](RunConfig& c) { c.run_id = "AZaz09._-"; }},
      {"base_lr tiny", [](RunConfig& c) { c.optimizer.lr.base_lr = 1e-300; }},
      {"warmup 0", [](RunConfig& c) { c.optimizer.lr.warmup_steps = 0; }},
      {"final_factor 0", [](RunConfig& c) { c.optimizer.lr.final_factor = 0; }},
      {"final_factor 1", [](RunConfig& c) { c.optimizer.lr.final_factor = 1; }},
      {"decay 0", [](RunConfig& c) { c.optimizer.compression_decay = 0; }},
      {"decay 1", [](RunConfig& c) { c.optimizer.compression_decay = 1; }},
      {"topk 1", [](RunConfig& c) { c.optimizer.compression_topk = 1; }},
      {"chunk 1", [](RunConfig& c) { c.optimizer.compression_chunk = 1; }},
      {"weight_decay 0", [](RunConfig& c) { c.optimizer.weight_decay = 0; }},
      {"min == max",
       [](RunConfig& c) {
         c.min_workers = 5;
         c.max_workers = 5;
       }},
      {"max_workers 4096", [](RunConfig& c) { c.max_workers = 4096; }},
      {"total_steps 1", [](RunConfig& c) { c.total_steps = 1; }},
      {"fingerprint never", [](RunConfig& c) { c.fingerprint_interval = 0; }},
      {"mad_multiplier 0", [](RunConfig& c) { c.deadline.mad_multiplier = 0; }},
      {"window 1", [](RunConfig& c) { c.deadline.window = 1; }},
      {"ceiling == floor", [](RunConfig& c) { c.deadline.ceiling = c.deadline.floor; }},
      {"tiny durations",
       [](RunConfig& c) {
         c.deadline.fixed = absl::Nanoseconds(1);
         c.deadline.floor = absl::Nanoseconds(1);
         c.heartbeat_timeout = absl::Nanoseconds(1);
       }},
      {"max_missed_steps 1", [](RunConfig& c) { c.max_missed_steps = 1; }},
      {"frame 4096", [](RunConfig& c) { c.max_frame_bytes = 4096; }},
      {"frame 64 MiB", [](RunConfig& c) { c.max_frame_bytes = 64 << 20; }},
  };
  for (const auto& [name, mutate] : cases) {
    SCOPED_TRACE(name);
    RunConfig config = ValidConfig();
    mutate(config);
    EXPECT_OK(config.Validate());
  }
}

TEST(RunConfigValidateTest, ReportsTheFirstFieldInDeclarationOrder) {
  RunConfig config = ValidConfig();
  config.max_frame_bytes = 0;
  config.optimizer.compression_topk = 0;
  EXPECT_THAT(std::string(config.Validate().message()), StartsWith("optimizer.compression_topk"));
}

// ---------------------------------------------------------------------------------------------
// Learning rate schedule

double Cosine(const LrSchedule& s, double progress) {
  return s.base_lr * (s.final_factor + (1 - s.final_factor) * 0.5 * (1 + std::cos(kPi * progress)));
}

TEST(LearningRateAtTest, WarmupThenCosine) {
  const LrSchedule s{4e-4, 250, 0.1};
  constexpr int64_t kTotal = 1000;
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 1, kTotal), 4e-4 / 250);
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 125, kTotal), 2e-4);
  EXPECT_EQ(LearningRateAt(s, 250, kTotal), 4e-4);  // exactly base_lr
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 251, kTotal), Cosine(s, 1.0 / 750));
  EXPECT_LT(LearningRateAt(s, 251, kTotal), 4e-4);
  EXPECT_GT(LearningRateAt(s, 251, kTotal), 0.9999 * 4e-4);
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 625, kTotal), 4e-4 * (0.1 + 0.9 * 0.5));  // halfway
  EXPECT_EQ(LearningRateAt(s, kTotal, kTotal), 4e-4 * 0.1);  // exactly base_lr * final_factor
  EXPECT_EQ(LearningRateAt(s, kTotal + 1, kTotal), 4e-4 * 0.1);
  EXPECT_EQ(LearningRateAt(s, 10 * kTotal, kTotal), 4e-4 * 0.1);
}

TEST(LearningRateAtTest, WarmupRisesAndCosineFalls) {
  const LrSchedule s{1e-3, 20, 0.0};
  constexpr int64_t kTotal = 200;
  for (int64_t step = 2; step <= 20; ++step) {
    EXPECT_GT(LearningRateAt(s, step, kTotal), LearningRateAt(s, step - 1, kTotal)) << step;
  }
  for (int64_t step = 21; step <= kTotal; ++step) {
    EXPECT_LT(LearningRateAt(s, step, kTotal), LearningRateAt(s, step - 1, kTotal)) << step;
  }
  EXPECT_EQ(LearningRateAt(s, kTotal, kTotal), 0.0);
}

TEST(LearningRateAtTest, NoWarmup) {
  const LrSchedule s{1e-3, 0, 0.5};
  constexpr int64_t kTotal = 100;
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 1, kTotal), Cosine(s, 1.0 / 100));
  EXPECT_LT(LearningRateAt(s, 1, kTotal), 1e-3);
  EXPECT_GT(LearningRateAt(s, 1, kTotal), 0.999 * 1e-3);
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 50, kTotal), 1e-3 * 0.75);
  EXPECT_EQ(LearningRateAt(s, kTotal, kTotal), 1e-3 * 0.5);
  EXPECT_EQ(LearningRateAt(s, kTotal + 5, kTotal), 1e-3 * 0.5);
}

TEST(LearningRateAtTest, ConstantWhenFinalFactorIsOne) {
  const LrSchedule s{3e-4, 0, 1.0};
  for (int64_t step : {1, 2, 50, 99, 100, 101}) {
    EXPECT_DOUBLE_EQ(LearningRateAt(s, step, 100), 3e-4) << step;
  }
}

TEST(LearningRateAtTest, WarmupLongerThanTheRun) {
  // The decay span clamps to one step, so the step after warm-up is already at the end.
  const LrSchedule s{1e-3, 10, 0.2};
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 5, 8), 5e-4);
  EXPECT_EQ(LearningRateAt(s, 10, 8), 1e-3);
  EXPECT_EQ(LearningRateAt(s, 11, 8), 1e-3 * 0.2);
}

TEST(LearningRateAtTest, SingleStepRun) {
  EXPECT_EQ(LearningRateAt(LrSchedule{1e-3, 0, 0.1}, 1, 1), 1e-3 * 0.1);
  EXPECT_EQ(LearningRateAt(LrSchedule{1e-3, 1, 0.1}, 1, 1), 1e-3);
}

TEST(LearningRateAtTest, StepsBeforeTheFirst) {
  // Not used by a run, but must not go negative or divide by zero.
  EXPECT_EQ(LearningRateAt(LrSchedule{1e-3, 10, 0.1}, 0, 100), 0.0);
  EXPECT_EQ(LearningRateAt(LrSchedule{1e-3, 10, 0.1}, -3, 100), 0.0);
  EXPECT_EQ(LearningRateAt(LrSchedule{1e-3, 0, 0.1}, 0, 100), 1e-3);
}

// ---------------------------------------------------------------------------------------------
// RunConfigToJson

// Parses `config`'s JSON against a base that differs from it in every field, so a field the
// JSON left out would show as the base's value.
RunConfig RoundTrip(const RunConfig& config, const RunConfig& other_base) {
  const std::string json = RunConfigToJson(config);
  absl::StatusOr<RunConfig> parsed = ParseRunConfig(json, other_base);
  EXPECT_OK(parsed);
  return parsed.ok() ? *parsed : RunConfig{};
}

TEST(RunConfigToJsonTest, DefaultsRoundTrip) {
  ExpectSameConfig(RoundTrip(ValidConfig(), CustomBase()), ValidConfig());
}

TEST(RunConfigToJsonTest, EveryFieldChangedRoundTrips) {
  // Values that a short decimal does not hold exactly, and durations off whole seconds.
  RunConfig c;
  c.run_id = "2024";  // a number when unquoted: must come back as text
  c.optimizer.lr = {1.0 / 3.0 * 1e-3, 7, 0.1 + 0.2 - 0.25};
  c.optimizer.compression_decay = 0.999999999999;
  c.optimizer.compression_topk = 3;
  c.optimizer.compression_chunk = 128;
  c.optimizer.weight_decay = 1e-300;
  c.optimizer.value_encoding = ValueEncoding::kFloat32;  // adamw takes f32 or bf16
  c.optimizer.algorithm = OptimizerConfig::Algorithm::kAdamW;
  c.optimizer.adam_beta1 = 0.85;
  c.optimizer.adam_beta2 = 1.0 - 1.0 / 3.0 * 1e-3;
  c.optimizer.adam_eps = 3e-9;
  c.min_workers = 3;
  c.max_workers = 4096;
  c.total_steps = int64_t{1} << 40;
  c.fingerprint_interval = 7;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = absl::Milliseconds(1500) + absl::Nanoseconds(1);
  c.deadline.mad_multiplier = 2.718281828459045;
  c.deadline.window = 9;
  c.deadline.floor = absl::Microseconds(250);
  // Just under 2^21 s, the longest duration whose every tick a double of seconds holds.
  c.deadline.ceiling = absl::Hours(24 * 24) + absl::Nanoseconds(3);
  c.max_missed_steps = 11;
  c.heartbeat_timeout = absl::Seconds(1) / 3;  // whole quarter-nanosecond ticks, no decimal
  c.max_frame_bytes = int64_t{64} << 20;
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();

  ExpectSameConfig(RoundTrip(c, ValidConfig()), c);
  ExpectSameConfig(RoundTrip(CustomBase(), ValidConfig()), CustomBase());
}

TEST(RunConfigTest, DenseBaselineNeedsDenseValues) {
  absl::StatusOr<RunConfig> c =
      ParseRunConfig("run_id: r\noptimizer: {algorithm: adamw, value_encoding: sign}\n");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("f32 or bf16 with algorithm adamw"));
  c = ParseRunConfig("run_id: r\noptimizer: {algorithm: sgd}\n");
  EXPECT_THAT(c.status().message(), HasSubstr("'demo' or 'adamw'"));
  c = ParseRunConfig("run_id: r\noptimizer: {algorithm: adamw, adam_beta2: 1}\n");
  EXPECT_THAT(c.status().message(), HasSubstr("optimizer.adam_beta2"));
  c = ParseRunConfig("run_id: r\noptimizer: {algorithm: adamw, value_encoding: f32}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->optimizer.algorithm, OptimizerConfig::Algorithm::kAdamW);
}

TEST(RunConfigTest, UnsetEncodingFollowsTheAlgorithm) {
  EXPECT_EQ(RunConfig().optimizer.value_encoding, ValueEncoding::kSign);  // DeMo's default
  for (const auto& [yaml, want] : std::vector<std::pair<std::string, ValueEncoding>>{
           {"optimizer: {algorithm: adamw}", ValueEncoding::kBFloat16},
           {"optimizer: {algorithm: demo}", ValueEncoding::kSign},
           {"optimizer: {compression_topk: 16}", ValueEncoding::kSign},
           {"optimizer: {algorithm: adamw, value_encoding: f32}", ValueEncoding::kFloat32},
           {"optimizer: {algorithm: demo, value_encoding: bf16}", ValueEncoding::kBFloat16},
           {"optimizer: {value_encoding: f16, algorithm: demo}", ValueEncoding::kFloat16},
       }) {
    absl::StatusOr<RunConfig> c = ParseRunConfig("run_id: r\n" + yaml + "\n");
    ASSERT_TRUE(c.ok()) << yaml << ": " << c.status();
    EXPECT_EQ(c->optimizer.value_encoding, want) << yaml;
  }
  // An encoding a flag named (the base) stays when the file names only its algorithm.
  RunConfig named = ValidConfig();
  named.optimizer.value_encoding = ValueEncoding::kFloat32;
  named.optimizer.value_encoding_named = true;
  absl::StatusOr<RunConfig> c = ParseRunConfig("optimizer: {algorithm: adamw}\n", named);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->optimizer.value_encoding, ValueEncoding::kFloat32);
  EXPECT_EQ(DefaultValueEncoding(OptimizerConfig::Algorithm::kDemo), ValueEncoding::kSign);
  EXPECT_EQ(DefaultValueEncoding(OptimizerConfig::Algorithm::kAdamW), ValueEncoding::kBFloat16);
}

TEST(RunConfigToJsonTest, EveryEncodingAndKindRoundTrips) {
  for (ValueEncoding encoding : {ValueEncoding::kFloat32, ValueEncoding::kBFloat16,
                                 ValueEncoding::kFloat16, ValueEncoding::kSign}) {
    for (DeadlinePolicy::Kind kind :
         {DeadlinePolicy::Kind::kFixed, DeadlinePolicy::Kind::kAdaptive}) {
      RunConfig c = ValidConfig();
      c.optimizer.value_encoding = encoding;
      c.deadline.kind = kind;
      ExpectSameConfig(RoundTrip(c, CustomBase()), c);
    }
  }
}

TEST(RunConfigToJsonTest, NamesAndNesting) {
  RunConfig c = ValidConfig();
  c.optimizer.value_encoding = ValueEncoding::kSign;
  c.deadline.kind = DeadlinePolicy::Kind::kFixed;
  c.deadline.fixed = absl::Milliseconds(2500);
  const std::string json = RunConfigToJson(c);
  EXPECT_THAT(json, StartsWith(R"({"run_id":"test-run","optimizer":{"algorithm":"demo",)"
                               R"("lr":{"base_lr":0.0004,)"));
  EXPECT_THAT(json, HasSubstr(R"("value_encoding":"sign")"));
  EXPECT_THAT(json, HasSubstr(R"("deadline":{"kind":"fixed","fixed_s":2.5,)"));
  EXPECT_THAT(json, HasSubstr(R"("heartbeat_timeout_s":15.0,)"));
  EXPECT_EQ(json.find('\n'), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Files

class ReadRunConfigFileTest : public ::testing::Test {
 protected:
  std::string WriteFile(const std::string& name, const std::string& contents) {
    const std::string path = absl::StrCat(::testing::TempDir(), "/run_config_test_", name);
    std::FILE* file = std::fopen(path.c_str(), "wb");
    EXPECT_NE(file, nullptr) << path;
    if (file == nullptr) return path;
    std::fwrite(contents.data(), 1, contents.size(), file);
    std::fclose(file);
    written_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const std::string& path : written_) std::remove(path.c_str());
  }

 private:
  std::vector<std::string> written_;
};

TEST_F(ReadRunConfigFileTest, ReadsAFile) {
  const std::string path = WriteFile("ok.yaml", "run_id: from-file\ntotal_steps: 42\n");
  absl::StatusOr<RunConfig> config = ReadRunConfigFile(path, CustomBase());
  ASSERT_TRUE(config.ok()) << config.status();
  RunConfig expected = CustomBase();
  expected.run_id = "from-file";
  expected.total_steps = 42;
  ExpectSameConfig(*config, expected);
}

TEST_F(ReadRunConfigFileTest, ReadsJson) {
  const std::string path = WriteFile("ok.json", R"({"run_id": "j", "min_workers": 2})");
  absl::StatusOr<RunConfig> config = ReadRunConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->run_id, "j");
  EXPECT_EQ(config->min_workers, 2);
}

TEST_F(ReadRunConfigFileTest, MissingFileIsNotFound) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/run_config_test_no_such.yaml");
  absl::StatusOr<RunConfig> config = ReadRunConfigFile(path, ValidConfig());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

TEST_F(ReadRunConfigFileTest, DirectoryIsAnError) {
  absl::StatusOr<RunConfig> config = ReadRunConfigFile(::testing::TempDir(), ValidConfig());
  EXPECT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr(::testing::TempDir()));
}

TEST_F(ReadRunConfigFileTest, ErrorsArePrefixedWithThePath) {
  std::string path = WriteFile("unknown.yaml", "run_id: x\noptimiser: {}\n");
  absl::StatusOr<RunConfig> config = ReadRunConfigFile(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()),
              StartsWith(absl::StrCat(path, ": unknown field 'optimiser' (line 2, column 1)")));

  path = WriteFile("syntax.yaml", "run_id: [x\n");
  config = ReadRunConfigFile(path);
  EXPECT_THAT(std::string(config.status().message()),
              StartsWith(absl::StrCat(path, ": YAML syntax error")));

  path = WriteFile("invalid.yaml", "run_id: x\ntotal_steps: 0\n");
  config = ReadRunConfigFile(path);
  EXPECT_EQ(config.status().message(), absl::StrCat(path, ": total_steps must be >= 1, got 0"));
}

}  // namespace
}  // namespace demod
