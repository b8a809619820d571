#include "worker/optimizer/cuda_updates.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/cpu_kernels.h"
#include "worker/optimizer/cuda/cuda_kernels.h"

namespace demod {
namespace {

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

// Reserves `count` values of T at the next 8-byte boundary of a buffer being laid out.
template <typename T>
size_t Reserve(size_t& end, size_t count) {
  const size_t at = (end + 7) / 8 * 8;
  end = at + count * sizeof(T);
  return at;
}

template <typename T>
T* At(uint8_t* base, size_t offset) {
  return reinterpret_cast<T*>(base + offset);
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

// Lays out every tensor's descriptor, chunk table and entries in one pinned buffer, copies it
// to the device at once and decodes every chunk of every tensor in one launch.
absl::Status CudaSignedSteps::ApplyOnDevice(const std::vector<const Tensor*>& tensors, bool decay,
                                            float keep, float step) {
  const at::Device device = tensors.front()->param.device();
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  int64_t total_chunks = 0;
  size_t entries = 0;
  cuda::SparseSignedSteps steps;
  for (const Tensor* t : tensors) {
    total_chunks += t->layout->num_chunks();
    entries += t->aggregate->indices.size();
    steps.max_chunk_size = std::max(steps.max_chunk_size, t->layout->chunk_size());
    steps.max_chunk_cols = std::max(steps.max_chunk_cols, t->layout->chunk_cols);
  }
  size_t bytes = 0;
  const size_t tensors_at = Reserve<cuda::SignedStepTensor>(bytes, tensors.size());
  const size_t chunk_tensor_at = Reserve<int32_t>(bytes, total_chunks);
  const size_t chunk_in_tensor_at = Reserve<int64_t>(bytes, total_chunks);
  const size_t offsets_at = Reserve<uint64_t>(bytes, total_chunks + 1);
  const size_t indices_at = Reserve<uint32_t>(bytes, entries);
  const size_t values_at = Reserve<float>(bytes, entries);
  if (!staging_.defined() || static_cast<size_t>(staging_.numel()) < bytes) {
    staging_ =
        at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions(at::kByte).pinned_memory(true));
  }
  uint8_t* host = staging_.data_ptr<uint8_t>();
  int64_t chunk = 0;
  uint64_t entry = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const ChunkLayout& layout = *tensors[k]->layout;
    const AggregateTensor& agg = *tensors[k]->aggregate;
    At<cuda::SignedStepTensor>(host, tensors_at)[k] = {
        tensors[k]->param.data_ptr<float>(),
        DctBasisTransposed(layout.chunk_rows, device, at::kFloat).data_ptr<float>(),
        DctBasisTransposed(layout.chunk_cols, device, at::kFloat).data_ptr<float>(),
        cpu::GeometryOf(layout)};
    for (int64_t c = 0; c < layout.num_chunks(); ++c, ++chunk) {
      At<int32_t>(host, chunk_tensor_at)[chunk] = static_cast<int32_t>(k);
      At<int64_t>(host, chunk_in_tensor_at)[chunk] = c;
      At<uint64_t>(host, offsets_at)[chunk] = entry + agg.chunk_offsets[c];
    }
    std::memcpy(At<uint32_t>(host, indices_at) + entry, agg.indices.data(),
                agg.indices.size() * sizeof(uint32_t));
    std::memcpy(At<float>(host, values_at) + entry, agg.values.data(),
                agg.values.size() * sizeof(float));
    entry += agg.indices.size();
  }
  At<uint64_t>(host, offsets_at)[total_chunks] = entry;

  const at::TensorOptions on_device = at::TensorOptions(at::kByte).device(device);
  at::Tensor buffer = at::empty({static_cast<int64_t>(bytes)}, on_device);
  uint8_t* dev = buffer.data_ptr<uint8_t>();
  steps.tensors = At<cuda::SignedStepTensor>(dev, tensors_at);
  steps.chunk_tensor = At<int32_t>(dev, chunk_tensor_at);
  steps.chunk_in_tensor = At<int64_t>(dev, chunk_in_tensor_at);
  steps.chunk_offsets = At<uint64_t>(dev, offsets_at);
  steps.indices = At<uint32_t>(dev, indices_at);
  steps.values = At<float>(dev, values_at);
  steps.total_chunks = total_chunks;
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
  return CudaStatus(
      cuda::LaunchAdamW(g.data_ptr<float>(), g.numel(), cpu::GeometryOf(layout), scalars,
                        param.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), stream),
      "the AdamW update");
}

}  // namespace demod
