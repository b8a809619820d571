#include "common/run_settings.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace demod {
namespace {

v1::ValueEncoding ToProto(ValueEncoding encoding) {
  switch (encoding) {
    case ValueEncoding::kFloat32:
      return v1::VALUE_ENCODING_F32;
    case ValueEncoding::kBFloat16:
      return v1::VALUE_ENCODING_BF16;
    case ValueEncoding::kFloat16:
      return v1::VALUE_ENCODING_F16;
    case ValueEncoding::kSign:
      return v1::VALUE_ENCODING_SIGN;
    case ValueEncoding::kSignMean:  // aggregates only, never a run's
      break;
  }
  return v1::VALUE_ENCODING_UNSPECIFIED;
}

v1::Algorithm ToProto(OptimizerConfig::Algorithm algorithm) {
  switch (algorithm) {
    case OptimizerConfig::Algorithm::kDemo:
      return v1::ALGORITHM_DEMO;
    case OptimizerConfig::Algorithm::kAdamW:
      return v1::ALGORITHM_ADAMW;
  }
  return v1::ALGORITHM_UNSPECIFIED;
}

}  // namespace

v1::RunSettings RunSettingsOf(const RunConfig& config) {
  v1::RunSettings run;
  run.set_run_id(config.run_id);
  const OptimizerConfig& c = config.optimizer;
  v1::OptimizerSettings* o = run.mutable_optimizer();
  o->set_algorithm(ToProto(c.algorithm));
  o->set_base_lr(c.lr.base_lr);
  o->set_warmup_steps(c.lr.warmup_steps);
  o->set_final_lr_factor(c.lr.final_factor);
  o->set_compression_decay(c.compression_decay);
  o->set_compression_topk(c.compression_topk);
  o->set_compression_chunk(c.compression_chunk);
  o->set_weight_decay(c.weight_decay);
  o->set_value_encoding(ToProto(c.value_encoding));
  o->set_adam_beta1(c.adam_beta1);
  o->set_adam_beta2(c.adam_beta2);
  o->set_adam_eps(c.adam_eps);
  run.set_total_steps(config.total_steps);
  run.set_fingerprint_interval(config.fingerprint_interval);
  run.set_max_frame_bytes(config.max_frame_bytes);
  run.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(config.heartbeat_timeout / 3));
  if (config.batch.balance) run.set_global_batch(config.batch.global);
  return run;
}

absl::StatusOr<OptimizerConfig> OptimizerConfigOf(const v1::OptimizerSettings& o) {
  OptimizerConfig c;
  switch (o.algorithm()) {
    case v1::ALGORITHM_DEMO:
      c.algorithm = OptimizerConfig::Algorithm::kDemo;
      break;
    case v1::ALGORITHM_ADAMW:
      c.algorithm = OptimizerConfig::Algorithm::kAdamW;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("the run's optimizer.algorithm ", o.algorithm(),
                       " is not one this worker knows (demo, adamw)"));
  }
  switch (o.value_encoding()) {
    case v1::VALUE_ENCODING_F32:
      c.value_encoding = ValueEncoding::kFloat32;
      break;
    case v1::VALUE_ENCODING_BF16:
      c.value_encoding = ValueEncoding::kBFloat16;
      break;
    case v1::VALUE_ENCODING_F16:
      c.value_encoding = ValueEncoding::kFloat16;
      break;
    case v1::VALUE_ENCODING_SIGN:
      c.value_encoding = ValueEncoding::kSign;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("the run's optimizer.value_encoding ", o.value_encoding(),
                       " is not one this worker knows (f32, bf16, f16, sign)"));
  }
  c.lr.base_lr = o.base_lr();
  c.lr.warmup_steps = o.warmup_steps();
  c.lr.final_factor = o.final_lr_factor();
  c.compression_decay = o.compression_decay();
  c.compression_topk = o.compression_topk();
  c.compression_chunk = o.compression_chunk();
  c.weight_decay = o.weight_decay();
  c.adam_beta1 = o.adam_beta1();
  c.adam_beta2 = o.adam_beta2();
  c.adam_eps = o.adam_eps();
  return c;
}

absl::StatusOr<LayoutTable> MakeRunLayoutTable(const std::vector<TensorShape>& tensors,
                                               const OptimizerConfig& optimizer) {
  const int64_t topk = optimizer.algorithm == OptimizerConfig::Algorithm::kAdamW
                           ? std::numeric_limits<int64_t>::max()
                           : optimizer.compression_topk;
  return MakeLayoutTable(tensors, optimizer.compression_chunk, topk);
}

}  // namespace demod
