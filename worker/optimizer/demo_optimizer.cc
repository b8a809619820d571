#include "worker/optimizer/demo_optimizer.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "common/status_macros.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/cpu_kernels.h"
#include "worker/optimizer/sparse_signed_step.h"

namespace demod {
namespace {

at::ScalarType ComputeType(const at::Tensor& param) {
  return param.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

bool IsSupportedType(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || t == at::kDouble;
}

bool IsCpuFloat(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DemoOptimizer>> DemoOptimizer::Create(
    std::vector<NamedTensor> params, const DemoOptions& options, Exchange* exchange) {
  DEMOD_RETURN_IF_ERROR(options.Validate());
  if (exchange == nullptr) return absl::InvalidArgumentError("exchange must not be null");
  std::vector<TensorShape> shapes;
  for (const auto& [name, param] : params) {
    if (!param.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter '", name, "' is undefined"));
    }
    if (!IsSupportedType(param.scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "' has dtype ", c10::toString(param.scalar_type()),
                       "; DeMo supports float32, bfloat16, float16 and float64"));
    }
    shapes.push_back({name, param.sizes().vec()});
  }
  DEMOD_ASSIGN_OR_RETURN(LayoutTable table, MakeLayoutTable(shapes, options.compression_chunk(),
                                                            options.compression_topk()));
  DEMOD_RETURN_IF_ERROR(exchange->Register(table));
  return std::unique_ptr<DemoOptimizer>(
      new DemoOptimizer(std::move(params), options, std::move(table), exchange));
}

DemoOptimizer::DemoOptimizer(std::vector<NamedTensor> params, const DemoOptions& options,
                             LayoutTable table, Exchange* exchange)
    : options_(options), table_(std::move(table)), exchange_(exchange) {
  using GroupKey = std::tuple<int64_t, int64_t, int, int, int>;
  std::map<GroupKey, size_t> group_index;
  std::vector<int64_t> group_chunks;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i].second;
    const ChunkLayout& layout = table_[i].layout;
    const GroupKey key{layout.chunk_size(), layout.topk, static_cast<int>(p.device().type()),
                       p.device().index(), static_cast<int>(ComputeType(p))};
    auto [it, added] = group_index.emplace(key, groups_.size());
    if (added) {
      groups_.emplace_back();
      groups_.back().chunk_size = layout.chunk_size();
      groups_.back().topk = layout.topk;
      group_chunks.push_back(0);
    }
    Group& g = groups_[it->second];
    group_of_.emplace_back(it->second, g.members.size());
    g.members.push_back(i);
    g.first_chunk.push_back(group_chunks[it->second]);
    group_chunks[it->second] += layout.num_chunks();
    params_.push_back(p);
  }
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Group& g = groups_[gi];
    const at::Tensor& p = params_[g.members[0]];
    const at::TensorOptions compute = p.options().dtype(ComputeType(p));
    g.momentum = at::zeros({group_chunks[gi], g.chunk_size}, compute);
  }
  last_traffic_.dense_fp32_bytes = TotalElements(table_) * 4;
}

at::Tensor DemoOptimizer::MomentumRows(size_t i) const {
  const auto [group, member] = group_of_[i];
  return groups_[group].momentum.narrow(0, groups_[group].first_chunk[member],
                                        table_[i].layout.num_chunks());
}

absl::Status DemoOptimizer::Step() {
  at::NoGradGuard no_grad;
  const int64_t step = step_ + 1;

  // Steps 2-6 of the algorithm, in the DCT domain.
  absl::Status gradients_finite = absl::OkStatus();
  for (Group& g : groups_) gradients_finite.Update(EncodeAccumulateSelect(g));
  if (!gradients_finite.ok()) {
    RestoreSelection();
    return gradients_finite;
  }
  last_payload_.step = step;
  last_payload_.encoding = options_.value_encoding();
  last_payload_.tensors.resize(params_.size());
  for (Group& g : groups_) AddSelectionToPayload(g);
  absl::StatusOr<std::string> payload = EncodeStepPayload(last_payload_, table_);
  if (!payload.ok()) {
    RestoreSelection();
    return payload.status();
  }

  // Steps 7-8: the exchange aggregates every worker's selection.
  const int64_t bytes_sent = static_cast<int64_t>(payload->size());
  absl::StatusOr<ExchangeResult> result = exchange_->ExchangeStep(step, *std::move(payload));
  if (!result.ok()) {
    RestoreSelection();
    return absl::Status(
        result.status().code(),
        absl::StrCat("step ", step, ": exchange failed: ", result.status().message()));
  }
  if (result->aggregate.tensors.size() != params_.size()) {
    RestoreSelection();
    return absl::InternalError(absl::StrCat("step ", step, ": aggregate has ",
                                            result->aggregate.tensors.size(), " tensors, expected ",
                                            params_.size()));
  }
  if (!result->own_contribution_included) RestoreSelection();

  // Steps 9-10.
  DEMOD_RETURN_IF_ERROR(ApplyAggregate(result->aggregate));
  step_ = step;
  last_traffic_.bytes_sent = bytes_sent;
  last_traffic_.bytes_received = result->bytes_received;
  return absl::OkStatus();
}

std::vector<NamedTensor> DemoOptimizer::MomentumBuffers() const {
  std::vector<NamedTensor> buffers;
  for (size_t g = 0; g < groups_.size(); ++g) {
    buffers.emplace_back(absl::StrCat("momentum.", g), groups_[g].momentum);
  }
  return buffers;
}

absl::Status DemoOptimizer::CatchUp(const StepAggregate& aggregate) {
  DEMOD_RETURN_IF_ERROR(ValidateStepAggregate(aggregate, table_));
  at::NoGradGuard no_grad;
  DEMOD_RETURN_IF_ERROR(ApplyAggregate(aggregate));
  step_ = aggregate.step;
  return absl::OkStatus();
}

// momentum <- decay * momentum + lr * DCT(grad), then the top-k |coefficients| of every chunk
// leave it (all but the wire's rounding, which stays to be sent later), into sent_indices and
// sent_values. Chunks of a gradient that are not finite are left out of the momentum and fail
// the step.
absl::Status DemoOptimizer::EncodeAccumulateSelect(Group& g) {
  const int64_t rows = g.momentum.size(0);
  const float decay = static_cast<float>(options_.compression_decay());
  const float lr = static_cast<float>(options_.lr());
  at::Tensor row_finite;
  if (IsCpuFloat(g.momentum)) {
    std::vector<cpu::GradientChunks> sources(g.members.size());
    std::vector<at::Tensor> gradients(g.members.size());
    for (size_t m = 0; m < g.members.size(); ++m) {
      const size_t i = g.members[m];
      const ChunkLayout& layout = table_[i].layout;
      cpu::GradientChunks& src = sources[m];
      if (params_[i].grad().defined()) {
        gradients[m] = params_[i].grad().to(at::kFloat).contiguous();
        src.gradient = gradients[m].data_ptr<float>();
      }
      src.layout = &layout;
      src.first_row = g.first_chunk[m];
      src.f_rows_t = DctBasisTransposed(layout.chunk_rows, at::kCPU, at::kFloat).data_ptr<float>();
      src.f_cols = DctBasis(layout.chunk_cols, at::kCPU, at::kFloat).data_ptr<float>();
    }
    g.sent_indices = at::empty({rows, g.topk}, g.momentum.options().dtype(at::kLong));
    g.sent_values = at::empty({rows, g.topk}, g.momentum.options());
    row_finite = at::empty({rows}, at::kByte);
    cpu::EncodeAccumulateSelect(sources, rows, g.chunk_size, g.topk, decay, lr,
                                options_.value_encoding(), g.momentum.data_ptr<float>(),
                                g.sent_indices.data_ptr<int64_t>(), g.sent_values.data_ptr<float>(),
                                row_finite.data_ptr<uint8_t>());
  } else {
    at::Tensor encoded = at::zeros_like(g.momentum);
    for (size_t m = 0; m < g.members.size(); ++m) {
      const size_t i = g.members[m];
      const at::Tensor& grad = params_[i].grad();
      if (!grad.defined()) continue;
      at::Tensor slice = encoded.narrow(0, g.first_chunk[m], table_[i].layout.num_chunks());
      EncodeChunksInto(grad.to(encoded.scalar_type()), table_[i].layout, slice);
    }
    row_finite = at::isfinite(encoded).all(/*dim=*/1);
    encoded.masked_fill_(row_finite.logical_not().unsqueeze(1), 0);
    if (decay != 1.0f) g.momentum.mul_(options_.compression_decay());
    g.momentum.add_(encoded, options_.lr());
    at::Tensor indices = std::get<1>(g.momentum.abs().topk(g.topk, /*dim=*/-1, /*largest=*/true,
                                                           /*sorted=*/false));
    g.sent_indices = std::get<0>(indices.sort(/*dim=*/-1));
    row_finite = row_finite.to(at::kCPU, at::kByte);
    TakeSelection(g);
  }
  const uint8_t* finite = row_finite.data_ptr<uint8_t>();
  const int64_t bad_row = std::find(finite, finite + rows, 0) - finite;
  if (bad_row == rows) return absl::OkStatus();
  const size_t m = std::upper_bound(g.first_chunk.begin(), g.first_chunk.end(), bad_row) -
                   g.first_chunk.begin() - 1;
  return absl::InvalidArgumentError(
      absl::StrCat("step ", step_ + 1, ": gradient of '", table_[g.members[m]].name,
                   "' is not finite (its DCT chunk ", bad_row - g.first_chunk[m], ")"));
}

// The ATen path's share of EncodeAccumulateSelect: the selection leaves the momentum.
void DemoOptimizer::TakeSelection(Group& g) {
  g.sent_values = g.momentum.gather(1, g.sent_indices);
  const ValueEncoding encoding = options_.value_encoding();
  if (cpu::SendsWholeValue(encoding)) {
    g.momentum.scatter_(1, g.sent_indices, 0.0);
    return;
  }
  const at::Tensor values = g.sent_values.to(at::kCPU, at::kFloat).contiguous();
  at::Tensor unsent = at::empty(values.sizes(), at::kFloat);
  const float* val = values.data_ptr<float>();
  float* u = unsent.data_ptr<float>();
  for (int64_t j = 0; j < values.numel(); ++j) u[j] = cpu::UnsentPart(encoding, val[j]);
  g.momentum.scatter_(1, g.sent_indices, unsent.to(g.momentum.options()));
}

// The group's selection, tensor by tensor, into last_payload_.
void DemoOptimizer::AddSelectionToPayload(const Group& g) {
  const at::Tensor indices = g.sent_indices.to(at::kCPU).contiguous();
  const at::Tensor values = g.sent_values.to(at::kCPU, at::kFloat).contiguous();
  const int64_t* idx = indices.data_ptr<int64_t>();
  const float* val = values.data_ptr<float>();
  for (size_t m = 0; m < g.members.size(); ++m) {
    const size_t i = g.members[m];
    const int64_t begin = g.first_chunk[m] * g.topk;
    const int64_t end = begin + table_[i].layout.num_selected();
    SparseTensor& out = last_payload_.tensors[i];
    out.indices.assign(idx + begin, idx + end);
    out.values.assign(val + begin, val + end);
  }
}

void DemoOptimizer::RestoreSelection() {
  for (Group& g : groups_) g.momentum.scatter_(1, g.sent_indices, g.sent_values);
}

// Steps 9-10: decode the aggregate and take a signed step of size lr (after weight decay).
absl::Status DemoOptimizer::ApplyAggregate(const StepAggregate& aggregate) {
  const double lr = options_.lr();
  const bool decay = options_.weight_decay() != 0.0;
  const double keep = 1.0 - lr * options_.weight_decay();
  std::vector<cpu::SparseSignedStep> on_cpu;
#if defined(DEMOD_WITH_CUDA)
  std::vector<CudaSignedSteps::Tensor> on_cuda;
#endif
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    const AggregateTensor& agg = aggregate.tensors[i];
    const ChunkLayout& layout = table_[i].layout;
    if (IsCpuFloat(p) && p.is_contiguous()) {
      on_cpu.push_back(
          {agg.chunk_offsets.data(), agg.indices.data(), agg.values.data(), &layout,
           DctBasisTransposed(layout.chunk_rows, at::kCPU, at::kFloat).data_ptr<float>(),
           DctBasisTransposed(layout.chunk_cols, at::kCPU, at::kFloat).data_ptr<float>(),
           p.data_ptr<float>()});
      continue;
    }
#if defined(DEMOD_WITH_CUDA)
    // The CUDA kernels follow the CPU's order of operations (sparse_signed_step.h).
    if (options_.device_updates() && TakesCudaUpdate(p)) {
      on_cuda.push_back({&agg, &layout, p});
      continue;
    }
#endif
    // Other devices and dtypes decode on the CPU, with the same routine. A decoded value can
    // cancel to rounding noise (~1e-9 with the sign encoding, whose values are means of +-1),
    // and then its sign depends on the order of summation: an ATen decode on CUDA split a CPU
    // worker and a CUDA worker apart (docs/optimizer.md). Only the signs travel to the device,
    // and mul_ then add_ of an exact lr * sign round the same everywhere.
    at::Tensor direction = DecodeSparseChunks(agg, layout, at::TensorOptions().dtype(at::kFloat))
                               .sign_()
                               .view(p.sizes())
                               .to(p.options());
    if (decay) p.mul_(keep);
    p.add_(direction, -lr);
  }
  cpu::ApplySparseSignedSteps(on_cpu, decay, static_cast<float>(keep), static_cast<float>(-lr));
#if defined(DEMOD_WITH_CUDA)
  return cuda_steps_.Apply(on_cuda, decay, static_cast<float>(keep), static_cast<float>(-lr));
#else
  return absl::OkStatus();
#endif
}

void DemoOptimizer::ZeroGrad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
  }
}

at::Tensor DemoOptimizer::Momentum(size_t i) const {
  at::NoGradGuard no_grad;
  return DecodeChunks(MomentumRows(i), table_.at(i).layout).view(params_[i].sizes());
}

}  // namespace demod
