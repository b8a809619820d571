// The run's settings on the wire (v1::RunSettings, in every worker's Welcome) and their one
// mapping to and from the types both sides compute with (RunConfig, OptimizerConfig): the
// coordinator writes them with RunSettingsOf, every worker reads them with OptimizerConfigOf,
// and both derive the run's layout table with MakeRunLayoutTable.
//
// Its own library (demod_run_settings): demod_common builds without protobuf.
// Pure functions; thread-safe.
#ifndef DEMOD_COMMON_RUN_SETTINGS_H_
#define DEMOD_COMMON_RUN_SETTINGS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/layout_table.h"
#include "common/run_config.h"
#include "demod/v1/coordinator.pb.h"

namespace demod {

// What a worker needs of `config`; the heartbeat interval is a third of the timeout.
v1::RunSettings RunSettingsOf(const RunConfig& config);

// INVALID_ARGUMENT naming the field for an algorithm or value encoding this build does not
// know (a coordinator newer than the worker).
absl::StatusOr<OptimizerConfig> OptimizerConfigOf(const v1::OptimizerSettings& settings);

// The run's layout table for `tensors`: DeMo's compression_topk entries per chunk, or every
// coefficient for the dense AdamW baseline (MakeLayoutTable clamps k to the chunk size).
absl::StatusOr<LayoutTable> MakeRunLayoutTable(const std::vector<TensorShape>& tensors,
                                               const OptimizerConfig& optimizer);

}  // namespace demod

#endif  // DEMOD_COMMON_RUN_SETTINGS_H_
