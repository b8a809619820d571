// What the fuzz targets share: a small run (its configuration and tensor table) like the ones
// the coordinator's tests use, so inputs reach the checks past the table's.
#ifndef DEMOD_TESTS_FUZZ_FUZZ_TABLES_H_
#define DEMOD_TESTS_FUZZ_FUZZ_TABLES_H_

#include <string>
#include <utility>
#include <vector>

#include "common/layout_table.h"
#include "common/run_config.h"
#include "common/run_settings.h"

namespace demod {

inline const std::vector<std::pair<std::string, std::vector<int64_t>>>& FuzzShapes() {
  static const auto* shapes = new std::vector<std::pair<std::string, std::vector<int64_t>>>{
      {"w0", {16, 24}}, {"b0", {24}}, {"w1", {8, 8, 3}}};
  return *shapes;
}

inline RunConfig FuzzRunConfig() {
  RunConfig c;
  c.run_id = "fuzz";
  c.min_workers = 1;
  c.max_workers = 4;
  c.total_steps = 1000;
  c.optimizer.compression_chunk = 8;
  c.optimizer.compression_topk = 4;
  c.optimizer.value_encoding = ValueEncoding::kFloat32;
  c.max_frame_bytes = 4096;
  return c;
}

// The run's layout table for FuzzShapes under FuzzRunConfig.
inline const LayoutTable& FuzzLayouts() {
  static const LayoutTable* table = [] {
    std::vector<TensorShape> shapes;
    for (const auto& [name, shape] : FuzzShapes()) shapes.push_back({name, shape});
    return new LayoutTable(*MakeRunLayoutTable(shapes, FuzzRunConfig().optimizer));
  }();
  return *table;
}

// Fails loudly (libFuzzer reports the input) when a rejection says nothing.
inline void RequireReason(const absl::Status& status) {
  if (!status.ok() && status.message().empty()) __builtin_trap();
}

}  // namespace demod

#endif  // DEMOD_TESTS_FUZZ_FUZZ_TABLES_H_
