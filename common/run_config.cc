#include "common/run_config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/parser.h"
#include "yaml-cpp/yaml.h"

namespace demod {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr size_t kMaxRunIdLength = 64;
constexpr int kMaxWorkersLimit = 4096;
constexpr int64_t kMinFrameBytes = 4096;
constexpr int64_t kMaxFrameBytes = int64_t{64} << 20;

// ---------------------------------------------------------------------------------------------
// Validation

bool IsRunIdChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

bool IsValidRunId(const std::string& run_id) {
  // "." and ".." would name directories other than the run's own in the state directory.
  return !run_id.empty() && run_id.size() <= kMaxRunIdLength && run_id != "." && run_id != ".." &&
         std::all_of(run_id.begin(), run_id.end(), IsRunIdChar);
}

// The run id as it should appear in a message: escaped, and cut short when it is far too long.
std::string QuoteRunId(const std::string& run_id) {
  if (run_id.size() <= kMaxRunIdLength) return absl::StrCat("'", absl::CHexEscape(run_id), "'");
  return absl::StrCat("'", absl::CHexEscape(run_id.substr(0, kMaxRunIdLength)), "...' (",
                      run_id.size(), " characters)");
}

double ToSeconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

template <typename T>
absl::Status MustBe(absl::string_view field, absl::string_view requirement, const T& got) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", requirement, ", got ", got));
}

// Durations must be finite so that later arithmetic (deadline = start + d) stays meaningful.
bool IsPositiveFinite(absl::Duration d) {
  return d > absl::ZeroDuration() && d != absl::InfiniteDuration();
}

// ---------------------------------------------------------------------------------------------
// YAML reading. Every reader names the field by its full path and, where the text has one, the
// position of its key; values are checked for type here and for range in Validate().

// Which field is being read, for messages.
struct FieldRef {
  std::string path;  // "optimizer.lr.base_lr"; empty for the top level
  YAML::Mark mark;   // of the field's key (a null value's own mark points past it)
};

std::string Where(const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return "";
  return absl::StrCat(" (line ", mark.line + 1, ", column ", mark.column + 1, ")");
}

// yaml-cpp 0.7 loops, allocating without bound, on a document that is a flow collection
// followed by a ',' ("{a: 1}, b" or "[1],2]"); tests/fuzz/run_config_fuzz found it. Such text
// is a syntax error anyway, so it is refused before yaml-cpp sees it.
absl::Status RefuseEntryAfterTopLevelFlow(absl::string_view text) {
  size_t i = 0;
  int line = 1;
  size_t line_start = 0;
  const auto next_line = [&](size_t newline) {
    ++line;
    line_start = newline + 1;
  };
  const auto skip_blank = [&] {
    while (i < text.size()) {
      const char c = text[i];
      if (c == '\n') {
        next_line(i++);
      } else if (c == ' ' || c == '\t' || c == '\r') {
        ++i;
      } else if (c == '#') {
        while (i < text.size() && text[i] != '\n') ++i;
      } else {
        break;
      }
    }
  };
  skip_blank();
  if (absl::StartsWith(text.substr(i), "---")) {
    i += 3;
    skip_blank();
  }
  if (i >= text.size() || (text[i] != '{' && text[i] != '[')) return absl::OkStatus();
  int depth = 0;
  char last = ' ';  // the last character that is not a space: a quote after one of "{[,:" opens
                    // a quoted scalar, elsewhere it is part of a plain one
  for (; i < text.size(); last = absl::ascii_isspace(text[i]) ? last : text[i], ++i) {
    const char c = text[i];
    if (c == '\n') {
      next_line(i);
    } else if ((c == '"' || c == '\'') &&
               absl::string_view("{[,:").find(last) != absl::string_view::npos) {
      // A quoted scalar: brackets inside do not count.
      for (++i; i < text.size() && text[i] != c; ++i) {
        if (text[i] == '\n') next_line(i);
        if (c == '"' && text[i] == '\\') ++i;
      }
      if (i >= text.size()) break;
    } else if (c == '#' && i > 0 && (text[i - 1] == ' ' || text[i - 1] == '\t')) {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ']') && --depth == 0) {
      ++i;
      break;
    }
  }
  if (depth != 0) return absl::OkStatus();  // unbalanced: yaml-cpp says where
  skip_blank();
  if (i < text.size() && text[i] == ',') {
    return absl::InvalidArgumentError(absl::StrCat("YAML syntax error (line ", line, ", column ",
                                                   i - line_start + 1,
                                                   "): ',' after the document's closing bracket"));
  }
  return absl::OkStatus();
}

// Takes a document's events and keeps none: CountDocuments only counts.
class IgnoreEvents final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// How many YAML documents `text` holds, counting no further than `limit`. Not by
// YAML::LoadAll: yaml-cpp 0.7's loops without end, allocating a document each time, on text
// whose parse goes wrong (it keeps finding empty documents: jbeder/yaml-cpp#1319;
// tests/fuzz/run_config_fuzz found it). Throws what the parser throws.
int CountDocuments(const std::string& text, int limit) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  IgnoreEvents ignore;
  int documents = 0;
  while (documents < limit && parser.HandleNextDocument(ignore)) ++documents;
  return documents;
}

absl::Status FieldError(const FieldRef& field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field.path, ": ", what, Where(field.mark)));
}

// yaml-cpp tags a quoted scalar "!" and a plain one "?"; "5" in JSON is a string, not a number.
bool IsQuoted(const YAML::Node& node) { return node.Tag() == "!"; }

// What a node is, for "expected X, got Y".
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "null";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      break;
  }
  constexpr size_t kMaxShown = 40;
  std::string text = node.Scalar();
  const bool cut = text.size() > kMaxShown;
  if (cut) text.resize(kMaxShown);
  text = absl::StrCat(absl::CHexEscape(text), cut ? "..." : "");
  return IsQuoted(node) ? absl::StrCat("the quoted string \"", text, "\"")
                        : absl::StrCat("'", text, "'");
}

absl::Status ExpectedError(const FieldRef& field, absl::string_view expected,
                           const YAML::Node& node) {
  return FieldError(field, absl::StrCat("expected ", expected, ", got ", Describe(node)));
}

absl::Status ReadString(const YAML::Node& node, const FieldRef& field, std::string* out) {
  // Any scalar is text (run_id: 2024 is the run "2024"); null is a missing value, not "".
  if (!node.IsScalar()) return ExpectedError(field, "a string", node);
  *out = node.Scalar();
  return absl::OkStatus();
}

// YAML spells the special floats .inf / .nan; absl::SimpleAtod does not know them.
bool ParseYamlDouble(const std::string& text, double* out) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == ".inf" || lower == "+.inf") {
    *out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (lower == "-.inf") {
    *out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (lower == ".nan") {
    *out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  return absl::SimpleAtod(text, out);
}

absl::Status ReadDouble(const YAML::Node& node, const FieldRef& field, double* out) {
  if (!node.IsScalar() || IsQuoted(node) || !ParseYamlDouble(node.Scalar(), out)) {
    return ExpectedError(field, "a number", node);
  }
  return absl::OkStatus();
}

template <typename Int>
absl::Status ReadInteger(const YAML::Node& node, const FieldRef& field, Int* out) {
  constexpr int64_t kMin = std::numeric_limits<Int>::min();
  constexpr int64_t kMax = std::numeric_limits<Int>::max();
  int64_t value = 0;
  // Decimal only: yaml-cpp's own conversion would read 010 as octal 8.
  if (!node.IsScalar() || IsQuoted(node) || !absl::SimpleAtoi(node.Scalar(), &value)) {
    return ExpectedError(field, "an integer", node);
  }
  if (value < kMin || value > kMax) {
    return ExpectedError(field, absl::StrCat("an integer in [", kMin, ", ", kMax, "]"), node);
  }
  *out = static_cast<Int>(value);
  return absl::OkStatus();
}

absl::Status ReadSeconds(const YAML::Node& node, const FieldRef& field, absl::Duration* out) {
  double seconds = 0;
  // absl::Seconds() turns NaN into an infinite duration, so non-finite input stops here.
  if (!node.IsScalar() || IsQuoted(node) || !ParseYamlDouble(node.Scalar(), &seconds) ||
      !std::isfinite(seconds)) {
    return ExpectedError(field, "a finite number of seconds", node);
  }
  *out = absl::Seconds(seconds);
  return absl::OkStatus();
}

absl::Status ReadValueEncoding(const YAML::Node& node, const FieldRef& field, ValueEncoding* out) {
  std::string name;
  DEMOD_RETURN_IF_ERROR(ReadString(node, field, &name));
  absl::StatusOr<ValueEncoding> encoding = ParseValueEncoding(name);
  if (!encoding.ok()) return FieldError(field, encoding.status().message());
  *out = *encoding;
  return absl::OkStatus();
}

absl::Status ReadAlgorithm(const YAML::Node& node, const FieldRef& field,
                           OptimizerConfig::Algorithm* out) {
  if (node.IsScalar() && node.Scalar() == "demo") {
    *out = OptimizerConfig::Algorithm::kDemo;
  } else if (node.IsScalar() && node.Scalar() == "adamw") {
    *out = OptimizerConfig::Algorithm::kAdamW;
  } else {
    return ExpectedError(field, "'demo' or 'adamw'", node);
  }
  return absl::OkStatus();
}

absl::Status ReadWeighting(const YAML::Node& node, const FieldRef& field, Weighting* out) {
  if (node.IsScalar() && node.Scalar() == "equal") {
    *out = Weighting::kEqual;
  } else if (node.IsScalar() && node.Scalar() == "samples") {
    *out = Weighting::kSamples;
  } else {
    return ExpectedError(field, "'equal' or 'samples'", node);
  }
  return absl::OkStatus();
}

absl::Status ReadDeadlineKind(const YAML::Node& node, const FieldRef& field,
                              DeadlinePolicy::Kind* out) {
  if (node.IsScalar() && node.Scalar() == "fixed") {
    *out = DeadlinePolicy::Kind::kFixed;
  } else if (node.IsScalar() && node.Scalar() == "adaptive") {
    *out = DeadlinePolicy::Kind::kAdaptive;
  } else {
    return ExpectedError(field, "'fixed' or 'adaptive'", node);
  }
  return absl::OkStatus();
}

struct FieldSpec {
  const char* name;
  std::function<absl::Status(const YAML::Node& value, const FieldRef& field)> read;
};

// Reads a mapping whose keys must all be among `fields`, each at most once. A null value
// ("optimizer:" with every line under it commented out) sets nothing.
absl::Status ReadMapping(const YAML::Node& node, const FieldRef& field,
                         const std::vector<FieldSpec>& fields) {
  if (node.IsNull()) return absl::OkStatus();
  if (!node.IsMap()) {
    if (field.path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected a mapping of fields at the top level, got ", Describe(node),
                       Where(node.Mark())));
    }
    return ExpectedError(field, "a mapping", node);
  }
  absl::flat_hash_set<std::string> seen;
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    FieldRef child{field.path, key.Mark()};
    if (!key.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field names must be strings, got ", Describe(key),
                       field.path.empty() ? " at the top level" : absl::StrCat(" in ", field.path),
                       Where(key.Mark())));
    }
    const std::string& name = key.Scalar();
    child.path = field.path.empty() ? name : absl::StrCat(field.path, ".", name);
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate field '", child.path, "'", Where(key.Mark())));
    }
    auto spec = std::find_if(fields.begin(), fields.end(),
                             [&](const FieldSpec& f) { return name == f.name; });
    if (spec == fields.end()) {
      std::vector<absl::string_view> names;
      for (const FieldSpec& f : fields) names.push_back(f.name);
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field '", child.path, "'", Where(key.Mark()), "; valid fields ",
                       field.path.empty() ? "at the top level" : absl::StrCat("of ", field.path),
                       ": ", absl::StrJoin(names, ", ")));
    }
    DEMOD_RETURN_IF_ERROR(spec->read(entry.second, child));
  }
  return absl::OkStatus();
}

absl::Status ReadLrSchedule(const YAML::Node& node, const FieldRef& field, LrSchedule* lr) {
  return ReadMapping(
      node, field,
      {
          {"base_lr", [&](auto& n, auto& f) { return ReadDouble(n, f, &lr->base_lr); }},
          {"warmup_steps", [&](auto& n, auto& f) { return ReadInteger(n, f, &lr->warmup_steps); }},
          {"final_factor", [&](auto& n, auto& f) { return ReadDouble(n, f, &lr->final_factor); }},
      });
}

absl::Status ReadOptimizer(const YAML::Node& node, const FieldRef& field, OptimizerConfig* opt) {
  bool algorithm_given = false;
  DEMOD_RETURN_IF_ERROR(ReadMapping(
      node, field,
      {
          {"algorithm",
           [&](auto& n, auto& f) {
             algorithm_given = true;
             return ReadAlgorithm(n, f, &opt->algorithm);
           }},
          {"lr", [&](auto& n, auto& f) { return ReadLrSchedule(n, f, &opt->lr); }},
          {"compression_decay",
           [&](auto& n, auto& f) { return ReadDouble(n, f, &opt->compression_decay); }},
          {"compression_topk",
           [&](auto& n, auto& f) { return ReadInteger(n, f, &opt->compression_topk); }},
          {"compression_chunk",
           [&](auto& n, auto& f) { return ReadInteger(n, f, &opt->compression_chunk); }},
          {"weight_decay", [&](auto& n, auto& f) { return ReadDouble(n, f, &opt->weight_decay); }},
          {"value_encoding",
           [&](auto& n, auto& f) {
             opt->value_encoding_named = true;
             return ReadValueEncoding(n, f, &opt->value_encoding);
           }},
          {"adam_beta1", [&](auto& n, auto& f) { return ReadDouble(n, f, &opt->adam_beta1); }},
          {"adam_beta2", [&](auto& n, auto& f) { return ReadDouble(n, f, &opt->adam_beta2); }},
          {"adam_eps", [&](auto& n, auto& f) { return ReadDouble(n, f, &opt->adam_eps); }},
      }));
  // A file that names its algorithm, where neither it nor a flag under it named an encoding,
  // gets the algorithm's.
  if (algorithm_given && !opt->value_encoding_named) {
    opt->value_encoding = DefaultValueEncoding(opt->algorithm);
  }
  return absl::OkStatus();
}

absl::Status ReadBool(const YAML::Node& node, const FieldRef& field, bool* out) {
  if (node.IsScalar() && !IsQuoted(node) && node.Scalar() == "true") {
    *out = true;
  } else if (node.IsScalar() && !IsQuoted(node) && node.Scalar() == "false") {
    *out = false;
  } else {
    return ExpectedError(field, "true or false", node);
  }
  return absl::OkStatus();
}

absl::Status ReadBatch(const YAML::Node& node, const FieldRef& field, BatchPolicy* b) {
  bool weighting_given = false;
  bool balance_given = false;
  DEMOD_RETURN_IF_ERROR(
      ReadMapping(node, field,
                  {
                      {"global", [&](auto& n, auto& f) { return ReadInteger(n, f, &b->global); }},
                      {"balance",
                       [&](auto& n, auto& f) {
                         balance_given = true;
                         return ReadBool(n, f, &b->balance);
                       }},
                      {"weighting",
                       [&](auto& n, auto& f) {
                         weighting_given = true;
                         return ReadWeighting(n, f, &b->weighting);
                       }},
                  }));
  // Balanced contributions stand for different numbers of samples: weighed by them unless the
  // file says otherwise (docs/coordinator.md, "Batch balancing", has the evidence).
  if (balance_given && !weighting_given) {
    b->weighting = b->balance ? Weighting::kSamples : Weighting::kEqual;
  }
  return absl::OkStatus();
}

absl::Status ReadDeadline(const YAML::Node& node, const FieldRef& field, DeadlinePolicy* d) {
  return ReadMapping(
      node, field,
      {
          {"kind", [&](auto& n, auto& f) { return ReadDeadlineKind(n, f, &d->kind); }},
          {"fixed_s", [&](auto& n, auto& f) { return ReadSeconds(n, f, &d->fixed); }},
          {"mad_multiplier",
           [&](auto& n, auto& f) { return ReadDouble(n, f, &d->mad_multiplier); }},
          {"window", [&](auto& n, auto& f) { return ReadInteger(n, f, &d->window); }},
          {"floor_s", [&](auto& n, auto& f) { return ReadSeconds(n, f, &d->floor); }},
          {"ceiling_s", [&](auto& n, auto& f) { return ReadSeconds(n, f, &d->ceiling); }},
      });
}

absl::Status ReadRunConfig(const YAML::Node& node, RunConfig* c) {
  return ReadMapping(
      node, FieldRef{},
      {
          {"run_id", [&](auto& n, auto& f) { return ReadString(n, f, &c->run_id); }},
          {"optimizer", [&](auto& n, auto& f) { return ReadOptimizer(n, f, &c->optimizer); }},
          {"min_workers", [&](auto& n, auto& f) { return ReadInteger(n, f, &c->min_workers); }},
          {"max_workers", [&](auto& n, auto& f) { return ReadInteger(n, f, &c->max_workers); }},
          {"total_steps", [&](auto& n, auto& f) { return ReadInteger(n, f, &c->total_steps); }},
          {"fingerprint_interval",
           [&](auto& n, auto& f) { return ReadInteger(n, f, &c->fingerprint_interval); }},
          {"deadline", [&](auto& n, auto& f) { return ReadDeadline(n, f, &c->deadline); }},
          {"batch", [&](auto& n, auto& f) { return ReadBatch(n, f, &c->batch); }},
          {"max_missed_steps",
           [&](auto& n, auto& f) { return ReadInteger(n, f, &c->max_missed_steps); }},
          {"heartbeat_timeout_s",
           [&](auto& n, auto& f) { return ReadSeconds(n, f, &c->heartbeat_timeout); }},
          {"stale_seed_grace_s",
           [&](auto& n, auto& f) { return ReadSeconds(n, f, &c->stale_seed_grace); }},
          {"max_frame_bytes",
           [&](auto& n, auto& f) { return ReadInteger(n, f, &c->max_frame_bytes); }},
          {"outbound_queue_steps",
           [&](auto& n, auto& f) { return ReadInteger(n, f, &c->outbound_queue_steps); }},
      });
}

// ---------------------------------------------------------------------------------------------
// JSON writing, the inverse of the readers above. ordered_json keeps the fields in the order of
// the structs, so a stored config reads like the header.

using OrderedJson = nlohmann::ordered_json;

// As a double, which nlohmann prints in the shortest form that reads back as the same double.
double JsonSeconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

absl::string_view DeadlineKindName(DeadlinePolicy::Kind kind) {
  return kind == DeadlinePolicy::Kind::kFixed ? "fixed" : "adaptive";
}

absl::string_view WeightingName(Weighting weighting) {
  return weighting == Weighting::kSamples ? "samples" : "equal";
}

}  // namespace

double LearningRateAt(const LrSchedule& schedule, int64_t step, int64_t total_steps) {
  const int64_t warmup = std::max<int64_t>(schedule.warmup_steps, 0);
  if (warmup > 0 && step <= warmup) {
    // The ratio first, so that the last warm-up step gives base_lr exactly.
    return schedule.base_lr *
           (static_cast<double>(std::max<int64_t>(step, 0)) / static_cast<double>(warmup));
  }
  // Doubles, so that no combination of arguments overflows.
  const double decay_steps =
      std::max(1.0, static_cast<double>(total_steps) - static_cast<double>(warmup));
  const double progress = (static_cast<double>(step) - static_cast<double>(warmup)) / decay_steps;
  // The ends are returned as such rather than left to cos() rounding.
  if (progress <= 0) return schedule.base_lr;
  if (progress >= 1) return schedule.base_lr * schedule.final_factor;
  const double cosine = 0.5 * (1.0 + std::cos(kPi * progress));
  return schedule.base_lr * (schedule.final_factor + (1.0 - schedule.final_factor) * cosine);
}

absl::Status RunConfig::Validate() const {
  if (!IsValidRunId(run_id)) {
    return MustBe("run_id", "1 to 64 characters from [A-Za-z0-9._-], not '.' or '..'",
                  QuoteRunId(run_id));
  }

  const LrSchedule& lr = optimizer.lr;
  if (!(std::isfinite(lr.base_lr) && lr.base_lr > 0)) {
    return MustBe("optimizer.lr.base_lr", "finite and > 0", lr.base_lr);
  }
  if (lr.warmup_steps < 0) return MustBe("optimizer.lr.warmup_steps", ">= 0", lr.warmup_steps);
  // Written as !(in range) so that NaN fails too.
  if (!(lr.final_factor >= 0 && lr.final_factor <= 1)) {
    return MustBe("optimizer.lr.final_factor", "in [0, 1]", lr.final_factor);
  }
  if (!(optimizer.compression_decay >= 0 && optimizer.compression_decay <= 1)) {
    return MustBe("optimizer.compression_decay", "in [0, 1]", optimizer.compression_decay);
  }
  if (optimizer.compression_topk < 1) {
    return MustBe("optimizer.compression_topk", ">= 1", optimizer.compression_topk);
  }
  if (optimizer.compression_chunk < 1) {
    return MustBe("optimizer.compression_chunk", ">= 1", optimizer.compression_chunk);
  }
  if (!(std::isfinite(optimizer.weight_decay) && optimizer.weight_decay >= 0)) {
    return MustBe("optimizer.weight_decay", "finite and >= 0", optimizer.weight_decay);
  }
  if (!(optimizer.adam_beta1 >= 0 && optimizer.adam_beta1 < 1)) {
    return MustBe("optimizer.adam_beta1", "in [0, 1)", optimizer.adam_beta1);
  }
  if (!(optimizer.adam_beta2 >= 0 && optimizer.adam_beta2 < 1)) {
    return MustBe("optimizer.adam_beta2", "in [0, 1)", optimizer.adam_beta2);
  }
  if (!(std::isfinite(optimizer.adam_eps) && optimizer.adam_eps > 0)) {
    return MustBe("optimizer.adam_eps", "finite and > 0", optimizer.adam_eps);
  }
  if (!AlgorithmSends(optimizer.algorithm, optimizer.value_encoding)) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer.value_encoding must be f32 or bf16 with algorithm adamw, got ",
                     ValueEncodingName(optimizer.value_encoding)));
  }
  if (!IsValidValueEncoding(static_cast<uint8_t>(optimizer.value_encoding))) {
    return MustBe("optimizer.value_encoding", "one of f32, bf16, f16, sign",
                  static_cast<int>(optimizer.value_encoding));
  }

  if (min_workers < 1) return MustBe("min_workers", ">= 1", min_workers);
  if (max_workers < min_workers) {
    return MustBe("max_workers", absl::StrCat(">= min_workers (", min_workers, ")"), max_workers);
  }
  if (max_workers > kMaxWorkersLimit) {
    return MustBe("max_workers", absl::StrCat("<= ", kMaxWorkersLimit), max_workers);
  }
  if (total_steps < 1) return MustBe("total_steps", ">= 1", total_steps);
  if (fingerprint_interval < 0) {
    return MustBe("fingerprint_interval", ">= 0", fingerprint_interval);
  }

  if (deadline.kind != DeadlinePolicy::Kind::kFixed &&
      deadline.kind != DeadlinePolicy::Kind::kAdaptive) {
    return MustBe("deadline.kind", "fixed or adaptive", static_cast<int>(deadline.kind));
  }
  // Both policies' fields are checked whatever the kind, so a flag that switches the kind
  // later cannot select unchecked values.
  if (!IsPositiveFinite(deadline.fixed)) {
    return MustBe("deadline.fixed_s", "finite and > 0", ToSeconds(deadline.fixed));
  }
  if (!(std::isfinite(deadline.mad_multiplier) && deadline.mad_multiplier >= 0)) {
    return MustBe("deadline.mad_multiplier", "finite and >= 0", deadline.mad_multiplier);
  }
  if (deadline.window < 1) return MustBe("deadline.window", ">= 1", deadline.window);
  if (!IsPositiveFinite(deadline.floor)) {
    return MustBe("deadline.floor_s", "finite and > 0", ToSeconds(deadline.floor));
  }
  if (!(deadline.ceiling >= deadline.floor && deadline.ceiling != absl::InfiniteDuration())) {
    return MustBe("deadline.ceiling_s",
                  absl::StrCat("finite and >= deadline.floor_s (", ToSeconds(deadline.floor), ")"),
                  ToSeconds(deadline.ceiling));
  }

  if (batch.global < 0 || (batch.balance && batch.global < 1)) {
    return MustBe("batch.global", batch.balance ? ">= 1 with batch.balance" : ">= 0", batch.global);
  }
  if (batch.weighting != Weighting::kEqual && batch.weighting != Weighting::kSamples) {
    return MustBe("batch.weighting", "equal or samples", static_cast<int>(batch.weighting));
  }
  if (max_missed_steps < 1) return MustBe("max_missed_steps", ">= 1", max_missed_steps);
  if (outbound_queue_steps < 2) {
    return MustBe("outbound_queue_steps", ">= 2", outbound_queue_steps);
  }
  if (!IsPositiveFinite(heartbeat_timeout)) {
    return MustBe("heartbeat_timeout_s", "finite and > 0", ToSeconds(heartbeat_timeout));
  }
  if (!(stale_seed_grace >= absl::ZeroDuration() && stale_seed_grace != absl::InfiniteDuration())) {
    return MustBe("stale_seed_grace_s", "finite and >= 0", ToSeconds(stale_seed_grace));
  }
  if (max_frame_bytes < kMinFrameBytes || max_frame_bytes > kMaxFrameBytes) {
    return MustBe("max_frame_bytes",
                  absl::StrCat("in [", kMinFrameBytes, ", ", kMaxFrameBytes, "]"), max_frame_bytes);
  }
  return absl::OkStatus();
}

absl::StatusOr<RunConfig> ParseRunConfig(absl::string_view text, const RunConfig& base) {
  RunConfig config = base;
  DEMOD_RETURN_IF_ERROR(RefuseEntryAfterTopLevelFlow(text));
  try {
    const std::string yaml(text);
    const int documents = CountDocuments(yaml, /*limit=*/2);
    if (documents > 1) {
      return absl::InvalidArgumentError("expected one YAML document, got at least 2");
    }
    // No document at all (empty text, only comments) sets nothing, like an empty mapping.
    if (documents == 1) DEMOD_RETURN_IF_ERROR(ReadRunConfig(YAML::Load(yaml), &config));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML syntax error", Where(e.mark), ": ", e.msg));
  } catch (const YAML::Exception& e) {
    // Nothing above converts with as<T>(), so this is not expected; it must still not escape.
    return absl::InvalidArgumentError(absl::StrCat("cannot read YAML: ", e.what()));
  }
  DEMOD_RETURN_IF_ERROR(config.Validate());
  return config;
}

absl::string_view AlgorithmName(OptimizerConfig::Algorithm algorithm) {
  return algorithm == OptimizerConfig::Algorithm::kAdamW ? "adamw" : "demo";
}

ValueEncoding DefaultValueEncoding(OptimizerConfig::Algorithm algorithm) {
  return algorithm == OptimizerConfig::Algorithm::kAdamW ? ValueEncoding::kBFloat16
                                                         : ValueEncoding::kSign;
}

bool AlgorithmSends(OptimizerConfig::Algorithm algorithm, ValueEncoding encoding) {
  return algorithm != OptimizerConfig::Algorithm::kAdamW || encoding == ValueEncoding::kFloat32 ||
         encoding == ValueEncoding::kBFloat16;
}

std::string RunConfigToJson(const RunConfig& config) {
  const OptimizerConfig& opt = config.optimizer;
  const DeadlinePolicy& deadline = config.deadline;
  OrderedJson lr = {
      {"base_lr", opt.lr.base_lr},
      {"warmup_steps", opt.lr.warmup_steps},
      {"final_factor", opt.lr.final_factor},
  };
  OrderedJson optimizer = {
      {"algorithm", std::string(AlgorithmName(opt.algorithm))},
      {"lr", std::move(lr)},
      {"compression_decay", opt.compression_decay},
      {"compression_topk", opt.compression_topk},
      {"compression_chunk", opt.compression_chunk},
      {"weight_decay", opt.weight_decay},
      {"value_encoding", std::string(ValueEncodingName(opt.value_encoding))},
      {"adam_beta1", opt.adam_beta1},
      {"adam_beta2", opt.adam_beta2},
      {"adam_eps", opt.adam_eps},
  };
  OrderedJson deadline_json = {
      {"kind", std::string(DeadlineKindName(deadline.kind))},
      {"fixed_s", JsonSeconds(deadline.fixed)},
      {"mad_multiplier", deadline.mad_multiplier},
      {"window", deadline.window},
      {"floor_s", JsonSeconds(deadline.floor)},
      {"ceiling_s", JsonSeconds(deadline.ceiling)},
  };
  OrderedJson json = {
      {"run_id", config.run_id},
      {"optimizer", std::move(optimizer)},
      {"min_workers", config.min_workers},
      {"max_workers", config.max_workers},
      {"total_steps", config.total_steps},
      {"fingerprint_interval", config.fingerprint_interval},
      {"deadline", std::move(deadline_json)},
      {"batch",
       {{"global", config.batch.global},
        {"balance", config.batch.balance},
        {"weighting", std::string(WeightingName(config.batch.weighting))}}},
      {"max_missed_steps", config.max_missed_steps},
      {"heartbeat_timeout_s", JsonSeconds(config.heartbeat_timeout)},
      {"stale_seed_grace_s", JsonSeconds(config.stale_seed_grace)},
      {"max_frame_bytes", config.max_frame_bytes},
      {"outbound_queue_steps", config.outbound_queue_steps},
  };
  // An invalid run id may hold bytes that are not UTF-8; dump() would throw on them.
  return json.dump(/*indent=*/-1, /*indent_char=*/' ', /*ensure_ascii=*/false,
                   OrderedJson::error_handler_t::replace);
}

absl::StatusOr<RunConfig> ReadRunConfigFile(const std::string& path, const RunConfig& base) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    // ENOENT maps to NOT_FOUND.
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open run config file '", path, "'"));
  }
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  const int read_errno = errno;  // e.g. EISDIR: fopen() accepts a directory, reading fails
  std::fclose(file);
  if (failed) {
    return absl::ErrnoToStatus(read_errno,
                               absl::StrCat("cannot read run config file '", path, "'"));
  }
  absl::StatusOr<RunConfig> config = ParseRunConfig(text, base);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace demod
