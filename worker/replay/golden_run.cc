#include "worker/replay/golden_run.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace demod {
namespace {

using nlohmann::json;

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Throws json::exception (caught by ParseGoldenRun) for a missing field or a wrong type;
// returns an error for a size that does not match the shapes.
absl::Status CheckSize(size_t got, int64_t want, const std::string& where) {
  if (static_cast<int64_t>(got) != want) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": has ", got, " entries, expected ", want));
  }
  return absl::OkStatus();
}

absl::StatusOr<GoldenRun> ParseJson(const json& doc) {
  GoldenRun run;
  if (doc.at("format").get<std::string>() != "demod-golden-v1") {
    return absl::InvalidArgumentError(
        absl::StrCat("format: '", doc.at("format").get<std::string>(), "' is not demod-golden-v1"));
  }
  const json& hyper = doc.at("hyper");
  run.options = DemoOptions(hyper.at("lr").get<double>())
                    .compression_decay(hyper.at("compression_decay").get<double>())
                    .compression_topk(hyper.at("compression_topk").get<int64_t>())
                    .compression_chunk(hyper.at("compression_chunk").get<int64_t>())
                    .weight_decay(hyper.at("weight_decay").get<double>());
  if (absl::Status s = run.options.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("hyper: ", s.message()));
  }
  run.workers = doc.at("workers").get<int>();
  run.steps = doc.at("steps").get<int>();
  if (run.workers < 1 || run.steps < 1) {
    return absl::InvalidArgumentError("workers and steps must be >= 1");
  }
  for (const json& p : doc.at("params")) {
    GoldenParam param{p.at("name").get<std::string>(), p.at("shape").get<std::vector<int64_t>>(),
                      p.at("init").get<std::vector<float>>()};
    if (absl::Status s = CheckSize(param.init.size(), Product(param.shape),
                                   absl::StrCat("params.", param.name, ".init"));
        !s.ok()) {
      return s;
    }
    run.params.push_back(std::move(param));
  }
  const size_t num_params = run.params.size();
  run.grads = doc.at("grads").get<std::vector<std::vector<std::vector<std::vector<float>>>>>();
  if (absl::Status s = CheckSize(run.grads.size(), run.steps, "grads"); !s.ok()) return s;
  for (int t = 0; t < run.steps; ++t) {
    if (absl::Status s =
            CheckSize(run.grads[t].size(), run.workers, absl::StrCat("grads[", t, "]"));
        !s.ok()) {
      return s;
    }
    for (int w = 0; w < run.workers; ++w) {
      const std::string where = absl::StrCat("grads[", t, "][", w, "]");
      if (absl::Status s = CheckSize(run.grads[t][w].size(), num_params, where); !s.ok()) return s;
      for (size_t i = 0; i < num_params; ++i) {
        if (absl::Status s = CheckSize(run.grads[t][w][i].size(), Product(run.params[i].shape),
                                       absl::StrCat(where, "[", i, "]"));
            !s.ok()) {
          return s;
        }
      }
    }
  }
  const json& expected = doc.at("expected");
  if (absl::Status s = CheckSize(expected.size(), run.steps, "expected"); !s.ok()) return s;
  for (int t = 0; t < run.steps; ++t) {
    const json& e = expected[t];
    GoldenStep step;
    step.params_after = e.at("params_after").get<std::vector<std::vector<double>>>();
    step.delta_after = e.at("delta_after").get<std::vector<std::vector<std::vector<double>>>>();
    const std::string where = absl::StrCat("expected[", t, "]");
    if (absl::Status s = CheckSize(step.params_after.size(), num_params, where + ".params_after");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckSize(step.delta_after.size(), run.workers, where + ".delta_after");
        !s.ok()) {
      return s;
    }
    const json& payloads = e.at("payload");
    if (absl::Status s = CheckSize(payloads.size(), run.workers, where + ".payload"); !s.ok()) {
      return s;
    }
    for (int w = 0; w < run.workers; ++w) {
      if (absl::Status s =
              CheckSize(payloads[w].size(), num_params, absl::StrCat(where, ".payload[", w, "]"));
          !s.ok()) {
        return s;
      }
      std::vector<GoldenPayload> per_param;
      for (const json& q : payloads[w]) {
        per_param.push_back({q.at("chunk_grid").get<std::vector<int64_t>>(),
                             q.at("k").get<int64_t>(), q.at("idx").get<std::vector<int64_t>>(),
                             q.at("val").get<std::vector<double>>()});
      }
      step.payload.push_back(std::move(per_param));
    }
    run.expected.push_back(std::move(step));
  }
  return run;
}

}  // namespace

absl::StatusOr<GoldenRun> ParseGoldenRun(const std::string& json_text) {
  try {
    return ParseJson(json::parse(json_text));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

absl::StatusOr<GoldenRun> ReadGoldenRun(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<GoldenRun> run = ParseGoldenRun(text.str());
  if (!run.ok()) {
    return absl::Status(run.status().code(), absl::StrCat(path, ": ", run.status().message()));
  }
  return run;
}

}  // namespace demod
