#include "worker/optimizer/chunked_dct.h"

#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "worker/optimizer/cpu_kernels.h"
#include "worker/optimizer/sparse_signed_step.h"

namespace demod {
namespace {

struct BasisKey {
  int64_t n;
  at::Device device;
  at::ScalarType dtype;
  bool transposed;
  bool operator<(const BasisKey& o) const {
    return std::make_tuple(n, device.type(), device.index(), dtype, transposed) <
           std::make_tuple(o.n, o.device.type(), o.device.index(), o.dtype, o.transposed);
  }
};

at::Tensor BuildBasis(int64_t n) {
  at::Tensor basis = at::empty({n, n}, at::kDouble);
  auto f = basis.accessor<double, 2>();
  const double pi = std::acos(-1.0);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t b = 0; b < n; ++b) {
      const double scale = b == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n);
      f[j][b] = scale * std::cos(pi * (2 * j + 1) * b / (2.0 * n));
    }
  }
  return basis;
}

// Contiguous F or F^T on the device; F^T is cached because a transposed view would make
// every matmul pay for a strided operand.
const at::Tensor& CachedBasis(int64_t n, at::Device device, at::ScalarType dtype, bool transposed) {
  static std::mutex mu;
  static std::map<BasisKey, at::Tensor>* cache = new std::map<BasisKey, at::Tensor>();
  std::lock_guard<std::mutex> lock(mu);
  const BasisKey key{n, device, dtype, transposed};
  auto it = cache->find(key);
  if (it == cache->end()) {
    at::Tensor basis = BuildBasis(n);
    if (transposed) basis = basis.t();
    basis = basis.to(dtype).to(device).contiguous();
    it = cache->emplace(key, std::move(basis)).first;
  }
  return it->second;  // std::map never moves its nodes
}

at::Tensor EncodeChunksAten(const at::Tensor& x, const ChunkLayout& layout) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  const at::Tensor& f_cols = CachedBasis(b, x.device(), x.scalar_type(), false);
  if (!layout.is_2d()) {
    return at::mm(x.reshape({-1, b}), f_cols);
  }
  const int64_t row_chunks = layout.chunk_grid[0];
  const int64_t col_chunks = layout.chunk_grid[1];
  // X F_b along the columns of every block: one GEMM over all rows.
  at::Tensor y = at::mm(x.reshape({-1, b}), f_cols);
  // F_a^T Y along the rows, one GEMM per row of blocks. bmm over an expanded (stride-0)
  // basis, because at::matmul would broadcast it through a copy and a slower path.
  const at::Tensor& f_rows_t = CachedBasis(a, x.device(), x.scalar_type(), true);
  at::Tensor z =
      at::bmm(f_rows_t.expand({row_chunks, a, a}), y.view({row_chunks, a, col_chunks * b}));
  // [R, a, Q, b] -> [R, Q, a, b]: each block becomes one contiguous chunk.
  return z.view({row_chunks, a, col_chunks, b})
      .permute({0, 2, 1, 3})
      .contiguous()
      .view({row_chunks * col_chunks, a * b});
}

at::Tensor DecodeChunksAten(const at::Tensor& coefficients, const ChunkLayout& layout) {
  const int64_t a = layout.chunk_rows;
  const int64_t b = layout.chunk_cols;
  const at::Tensor& f_cols_t =
      CachedBasis(b, coefficients.device(), coefficients.scalar_type(), true);
  if (!layout.is_2d()) {
    return at::mm(coefficients.reshape({-1, b}), f_cols_t).view(layout.matrix_shape);
  }
  const int64_t row_chunks = layout.chunk_grid[0];
  const int64_t col_chunks = layout.chunk_grid[1];
  at::Tensor z = coefficients.reshape({row_chunks, col_chunks, a, b})
                     .permute({0, 2, 1, 3})
                     .contiguous()
                     .view({row_chunks, a, col_chunks * b});
  const at::Tensor& f_rows =
      CachedBasis(a, coefficients.device(), coefficients.scalar_type(), false);
  at::Tensor y = at::bmm(f_rows.expand({row_chunks, a, a}), z);        // F_a Z
  return at::mm(y.view({-1, b}), f_cols_t).view(layout.matrix_shape);  // (F_a Z) F_b^T
}

bool UseCpuKernels(const at::Tensor& t) {
  return t.device().is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

}  // namespace

at::Tensor DctBasis(int64_t n, at::Device device, at::ScalarType dtype) {
  return CachedBasis(n, device, dtype, /*transposed=*/false);
}

at::Tensor DctBasisTransposed(int64_t n, at::Device device, at::ScalarType dtype) {
  return CachedBasis(n, device, dtype, /*transposed=*/true);
}

void EncodeChunksInto(const at::Tensor& x, const ChunkLayout& layout, at::Tensor& out) {
  if (!UseCpuKernels(x) || !out.is_contiguous()) {
    out.copy_(EncodeChunksAten(x, layout));
    return;
  }
  const at::Tensor input = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "EncodeChunks", [&] {
    cpu::EncodeChunks<scalar_t>(
        input.data_ptr<scalar_t>(), layout,
        CachedBasis(layout.chunk_rows, x.device(), x.scalar_type(), true).data_ptr<scalar_t>(),
        CachedBasis(layout.chunk_cols, x.device(), x.scalar_type(), false).data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>());
  });
}

at::Tensor EncodeChunks(const at::Tensor& x, const ChunkLayout& layout) {
  at::Tensor out = at::empty({layout.num_chunks(), layout.chunk_size()}, x.options());
  EncodeChunksInto(x, layout, out);
  return out;
}

at::Tensor DecodeChunks(const at::Tensor& coefficients, const ChunkLayout& layout) {
  if (!UseCpuKernels(coefficients)) return DecodeChunksAten(coefficients, layout);
  const at::Tensor input = coefficients.contiguous();
  at::Tensor x = at::empty(layout.matrix_shape, coefficients.options());
  AT_DISPATCH_FLOATING_TYPES(coefficients.scalar_type(), "DecodeChunks", [&] {
    cpu::DecodeChunks<scalar_t>(
        input.data_ptr<scalar_t>(), layout,
        CachedBasis(layout.chunk_rows, x.device(), x.scalar_type(), false).data_ptr<scalar_t>(),
        CachedBasis(layout.chunk_cols, x.device(), x.scalar_type(), true).data_ptr<scalar_t>(),
        x.data_ptr<scalar_t>());
  });
  return x;
}

at::Tensor DecodeSparseChunks(const AggregateTensor& aggregate, const ChunkLayout& layout,
                              const at::TensorOptions& options) {
  if (options.device().is_cpu() && options.dtype() == at::kFloat) {
    at::Tensor x = at::empty(layout.matrix_shape, options);
    cpu::DecodeSparseChunks(
        aggregate.chunk_offsets.data(), aggregate.indices.data(), aggregate.values.data(), layout,
        CachedBasis(layout.chunk_rows, at::kCPU, at::kFloat, true).data_ptr<float>(),
        CachedBasis(layout.chunk_cols, at::kCPU, at::kFloat, true).data_ptr<float>(),
        x.data_ptr<float>());
    return x;
  }
  // Dense coefficients on the device, then the dense inverse.
  const int64_t n = static_cast<int64_t>(aggregate.indices.size());
  at::Tensor flat_index = at::empty({n}, at::kLong);
  int64_t* fi = flat_index.data_ptr<int64_t>();
  for (int64_t c = 0; c < layout.num_chunks(); ++c) {
    for (uint64_t e = aggregate.chunk_offsets[c]; e < aggregate.chunk_offsets[c + 1]; ++e) {
      fi[e] = c * layout.chunk_size() + aggregate.indices[e];
    }
  }
  const at::Tensor values =
      at::from_blob(const_cast<float*>(aggregate.values.data()), {n}, at::kFloat);
  at::Tensor dense = at::zeros({layout.num_elements()}, options);
  dense.index_put_({flat_index.to(options.device())}, values.to(options));
  return DecodeChunks(dense.view({layout.num_chunks(), layout.chunk_size()}), layout);
}

}  // namespace demod
