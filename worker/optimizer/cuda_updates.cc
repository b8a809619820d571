#include "worker/optimizer/cuda_updates.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/cpu_kernels.h"
#include "worker/optimizer/cuda/cuda_kernels.h"
#include "worker/optimizer/sparse_step_staging.h"

namespace demod {
namespace {

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

}  // namespace

bool TakesCudaUpdate(const at::Tensor& param) {
  return param.is_cuda() && param.scalar_type() == at::kFloat && param.is_contiguous();
}

absl::Status CudaSignedSteps::Apply(const std::vector<Tensor>& tensors, bool decay, float keep,
                                    float step) {
  std::map<int, std::vector<const Tensor*>> by_device;
  for (const Tensor& t : tensors) by_device[t.param.device().index()].push_back(&t);
  for (const auto& [device, on_device] : by_device) {
    absl::Status status = ApplyOnDevice(on_device, decay, keep, step);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// Stages every tensor's descriptor, chunk table and entries in one pinned buffer
// (sparse_step_staging.h), copies it to the device at once and decodes every chunk of every
// tensor in one launch.
absl::Status CudaSignedSteps::ApplyOnDevice(const std::vector<const Tensor*>& tensors, bool decay,
                                            float keep, float step) {
  const at::Device device = tensors.front()->param.device();
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  std::vector<StagedTensor> staged;
  for (const Tensor* t : tensors) {
    const ChunkLayout& layout = *t->layout;
    staged.push_back({t->aggregate, &layout, t->param.data_ptr<float>(),
                      DctBasisTransposed(layout.chunk_rows, device, at::kFloat).data_ptr<float>(),
                      DctBasisTransposed(layout.chunk_cols, device, at::kFloat).data_ptr<float>()});
  }
  const size_t bytes = SparseSignedStepsBytes(staged);
  if (!staging_.defined() || static_cast<size_t>(staging_.numel()) < bytes) {
    staging_ =
        at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions(at::kByte).pinned_memory(true));
  }
  const at::TensorOptions on_device = at::TensorOptions(at::kByte).device(device);
  at::Tensor buffer = at::empty({static_cast<int64_t>(bytes)}, on_device);
  uint8_t* host = staging_.data_ptr<uint8_t>();
  uint8_t* dev = buffer.data_ptr<uint8_t>();
  const cuda::SparseSignedSteps steps = StageSparseSignedSteps(staged, host, dev);
  const size_t scratch_bytes = cuda::SparseSignedStepsScratchBytes(steps);
  at::Tensor scratch;
  if (scratch_bytes > 0) scratch = at::empty({static_cast<int64_t>(scratch_bytes)}, on_device);

  absl::Status status = CudaStatus(
      cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream), "copying the aggregate");
  if (status.ok()) {
    status = CudaStatus(
        cuda::LaunchSparseSignedSteps(steps, decay, keep, step,
                                      scratch.defined() ? scratch.data_ptr() : nullptr, stream),
        "the sparse signed step");
  }
  // Waits for the copy (staging_ is reused next step) and reports errors of the kernel.
  status.Update(CudaStatus(cudaStreamSynchronize(stream), "the sparse signed step"));
  return status;
}

absl::Status ApplyAdamWOnCuda(const std::vector<float>& gradient, const ChunkLayout& layout,
                              const rounded::AdamWScalars& scalars, at::Tensor& param,
                              at::Tensor& m, at::Tensor& v) {
  const c10::cuda::CUDAGuard guard(param.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(param.device().index()).stream();
  const at::Tensor host = at::from_blob(const_cast<float*>(gradient.data()),
                                        {static_cast<int64_t>(gradient.size())}, at::kFloat);
  const at::Tensor g = host.to(param.device());
  absl::Status status = CudaStatus(
      cuda::LaunchAdamW(g.data_ptr<float>(), g.numel(), cpu::GeometryOf(layout), scalars,
                        param.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), stream),
      "the AdamW update");
  // Reports the kernel's own errors here rather than in some later call.
  status.Update(CudaStatus(cudaStreamSynchronize(stream), "the AdamW update"));
  return status;
}

}  // namespace demod
