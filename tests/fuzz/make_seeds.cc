// Writes the fuzz targets' seed corpora, from the real encoders, into DIR/<target>/:
// payloads and aggregates in each value encoding, real frames of a state transfer and of a
// payload, run configurations as users write them. Small on purpose: the fuzzer grows them.
//   demod-fuzz-seeds DIR          (scripts/fuzz.sh seeds writes tests/fuzz/seeds)
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/aggregation.h"
#include "common/frame_assembler.h"
#include "common/payload_codec.h"
#include "common/run_config.h"
#include "demod/v1/coordinator.pb.h"
#include "tests/fuzz/fuzz_tables.h"
#include "tests/support/synthetic_payload.h"

namespace demod {
namespace {

void Write(const std::filesystem::path& dir, const std::string& name, const std::string& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

int Main(const std::filesystem::path& out) {
  std::mt19937_64 random(1);
  const LayoutTable& table = FuzzLayouts();
  for (ValueEncoding encoding : {ValueEncoding::kFloat32, ValueEncoding::kBFloat16,
                                 ValueEncoding::kFloat16, ValueEncoding::kSign}) {
    const StepPayload a = SyntheticPayload(table, 3, encoding, random);
    const StepPayload b = SyntheticPayload(table, 3, encoding, random);
    const std::string suffix(ValueEncodingName(encoding));
    Write(out / "payload_codec_fuzz", "payload-" + suffix, *EncodeStepPayload(a, table));
    Write(out / "payload_codec_fuzz", "aggregate-" + suffix,
          *AggregateStepEncoded({{1, &a}, {2, &b}}, table));
  }
  // A state frame, as a donor sends it, and a payload frame.
  v1::WorkerMessage state;
  state.mutable_state()->set_joiner_id(2);
  state.mutable_state()->set_step(7);
  state.mutable_state()->set_total_bytes(300);
  state.mutable_state()->set_offset(100);
  state.mutable_state()->set_data(std::string(100, 'p'));
  Write(out / "state_frame_header_fuzz", "state-frame", state.SerializeAsString());
  const std::string payload =
      *EncodeStepPayload(SyntheticPayload(table, 1, ValueEncoding::kFloat32, random), table);
  v1::WorkerMessage frame;
  frame.mutable_payload()->set_step(1);
  frame.mutable_payload()->set_total_bytes(payload.size());
  frame.mutable_payload()->set_data(payload.substr(0, 64));
  Write(out / "state_frame_header_fuzz", "payload-frame", frame.SerializeAsString());
  Write(out / "coordinator_fuzz", "state-frame", state.SerializeAsString());
  Write(out / "coordinator_fuzz", "payload-frame", frame.SerializeAsString());
  // Frames as (id, total, offset, data) draws: the bytes of two frames of one message.
  Write(out / "frame_assembler_fuzz", "two-frames",
        std::string("\x01\x02\x00\x08\x00\x00", 6) + payload.substr(0, 200));
  // Run configurations: a full one in JSON (as the state file holds it) and YAML as in docs.
  Write(out / "run_config_fuzz", "full.json", RunConfigToJson(FuzzRunConfig()));
  Write(out / "run_config_fuzz", "docs.yaml",
        "run_id: gpt2-small\nmin_workers: 2\ntotal_steps: 5000\noptimizer:\n"
        "  lr: {base_lr: 6e-4, warmup_steps: 100}\n  compression_topk: 32\n"
        "  value_encoding: bf16\ndeadline: {kind: adaptive, floor_s: 2, ceiling_s: 120}\n");
  return 0;
}

}  // namespace
}  // namespace demod

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: demod-fuzz-seeds DIR\n");
    return 2;
  }
  return demod::Main(argv[1]);
}
