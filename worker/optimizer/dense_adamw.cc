#include "worker/optimizer/dense_adamw.h"

#include <ATen/core/grad_mode.h>

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/layout_table.h"
#include "common/payload_codec.h"
#include "common/status_macros.h"
#include "worker/optimizer/adamw_update.h"
#if defined(DEMOD_WITH_CUDA)
#include "worker/optimizer/cuda_updates.h"
#endif

namespace demod {
namespace {

// A tensor's elements in the wire's order: chunk after chunk (row-major over the chunk grid),
// row-major within a chunk, as docs/wire-format.md numbers a chunk's coefficients.
at::Tensor ToChunkOrder(const at::Tensor& x, const ChunkLayout& layout) {
  at::Tensor m = x.reshape(layout.matrix_shape);
  if (!layout.is_2d()) return m.reshape({-1});
  return m
      .reshape({layout.chunk_grid[0], layout.chunk_rows, layout.chunk_grid[1], layout.chunk_cols})
      .permute({0, 2, 1, 3})
      .reshape({-1});
}

}  // namespace

absl::StatusOr<std::unique_ptr<DenseAdamW>> DenseAdamW::Create(std::vector<NamedTensor> params,
                                                               const AdamWOptions& options,
                                                               Exchange* exchange) {
  if (options.encoding != ValueEncoding::kFloat32 && options.encoding != ValueEncoding::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("the dense baseline sends f32 or bf16 gradients, not ",
                     ValueEncodingName(options.encoding)));
  }
  std::vector<TensorShape> shapes;
  std::set<std::string> names;
  for (const auto& [name, p] : params) {
    if (!p.defined() || !at::isFloatingType(p.scalar_type()) || !names.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "' is undefined, not floating point, or repeated"));
    }
    shapes.push_back({name, p.sizes().vec()});
  }
  // Every coefficient of every chunk: the layout clamps k to the chunk size.
  DEMOD_ASSIGN_OR_RETURN(LayoutTable table, MakeLayoutTable(shapes, options.chunk,
                                                            std::numeric_limits<int64_t>::max()));
  DEMOD_RETURN_IF_ERROR(exchange->Register(table));
  return std::unique_ptr<DenseAdamW>(
      new DenseAdamW(std::move(params), options, std::move(table), exchange));
}

DenseAdamW::DenseAdamW(std::vector<NamedTensor> params, const AdamWOptions& options,
                       LayoutTable table, Exchange* exchange)
    : params_(std::move(params)), options_(options), table_(std::move(table)), exchange_(exchange) {
  for (const auto& [name, p] : params_) {
    // The moments live with the parameter when the CUDA kernels update it, else on the CPU
    // (see Apply).
    at::TensorOptions moments = at::TensorOptions(at::kFloat);
#if defined(DEMOD_WITH_CUDA)
    if (options.device_updates && TakesCudaUpdate(p)) moments = moments.device(p.device());
#endif
    m_.push_back(at::zeros(p.sizes(), moments));
    v_.push_back(at::zeros(p.sizes(), moments));
    traffic_.dense_fp32_bytes += p.numel() * 4;
  }
}

std::vector<NamedTensor> DenseAdamW::SharedState() const {
  std::vector<NamedTensor> state;
  for (size_t i = 0; i < params_.size(); ++i) {
    state.emplace_back("adamw.m." + params_[i].first, m_[i]);
    state.emplace_back("adamw.v." + params_[i].first, v_[i]);
  }
  return state;
}

void DenseAdamW::ZeroGrad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
  }
}

absl::Status DenseAdamW::Step() {
  at::NoGradGuard no_grad;
  const int64_t step = step_ + 1;
  StepPayload payload;
  payload.step = step;
  payload.encoding = options_.encoding;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    const ChunkLayout& layout = table_[i].layout;
    at::Tensor g = p.grad().defined() ? p.grad() : at::zeros_like(p);
    at::Tensor flat = ToChunkOrder(g.to(at::kCPU, at::kFloat), layout).contiguous();
    if (!at::isfinite(flat).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", step, ": gradient of '", name, "' is not finite"));
    }
    SparseTensor tensor;
    tensor.values.assign(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
    tensor.indices.resize(tensor.values.size());
    for (size_t e = 0; e < tensor.indices.size(); ++e) {
      tensor.indices[e] = static_cast<uint32_t>(e % layout.chunk_size());
    }
    payload.tensors.push_back(std::move(tensor));
  }
  DEMOD_ASSIGN_OR_RETURN(std::string bytes, EncodeStepPayload(payload, table_));
  traffic_.bytes_sent = static_cast<int64_t>(bytes.size());
  absl::StatusOr<ExchangeResult> result = exchange_->ExchangeStep(step, std::move(bytes));
  if (!result.ok()) {
    return absl::Status(
        result.status().code(),
        absl::StrCat("step ", step, ": exchange failed: ", result.status().message()));
  }
  traffic_.bytes_received = result->bytes_received;
  // A gradient that missed its step is simply lost, as in an all-reduce that went on
  // without this worker.
  return Apply(result->aggregate, step);
}

absl::Status DenseAdamW::CatchUp(const StepAggregate& aggregate) {
  DEMOD_RETURN_IF_ERROR(ValidateStepAggregate(aggregate, table_));
  at::NoGradGuard no_grad;
  return Apply(aggregate, aggregate.step);
}

absl::Status DenseAdamW::Apply(const StepAggregate& aggregate, int64_t step) {
  if (aggregate.tensors.size() != params_.size()) {
    return absl::InternalError(absl::StrCat("step ", step, ": aggregate has ",
                                            aggregate.tensors.size(), " tensors, expected ",
                                            params_.size()));
  }
  const rounded::AdamWScalars scalars = AdamWScalarsFor(options_.lr, options_.beta1, options_.beta2,
                                                        options_.eps, options_.weight_decay, step);
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i].second;
    const AggregateTensor& agg = aggregate.tensors[i];
    const ChunkLayout& layout = table_[i].layout;
    if (agg.values.size() != static_cast<size_t>(layout.num_elements())) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", step, ": the aggregate of '", params_[i].first, "' is not dense"));
    }
#if defined(DEMOD_WITH_CUDA)
    if (m_[i].is_cuda()) {  // the constructor put the moments with the parameter
      if (!TakesCudaUpdate(p) || p.device() != m_[i].device()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "parameter '", params_[i].first, "' left its CUDA device or became non-contiguous"));
      }
      DEMOD_RETURN_IF_ERROR(ApplyAdamWOnCuda(agg.values, layout, scalars, p, m_[i], v_[i]));
      continue;
    }
#endif
    // Element by element in one fixed order of roundings (adamw_update.h): the same bits on
    // every worker, whatever its thread count, instruction set or device. Parameters of other
    // dtypes or devices make a round trip through a float32 copy on the CPU.
    const bool in_place = p.device().is_cpu() && p.scalar_type() == at::kFloat && p.is_contiguous();
    at::Tensor host = in_place ? p
                               : p.to(at::kCPU, at::kFloat, /*non_blocking=*/false,
                                      /*copy=*/true)
                                     .contiguous();
    cpu::ApplyAdamW(agg.values.data(), layout, scalars, host.data_ptr<float>(),
                    m_[i].data_ptr<float>(), v_[i].data_ptr<float>());
    if (!in_place) p.copy_(host);
  }
  step_ = step;
  return absl::OkStatus();
}

}  // namespace demod
