#include "worker/optimizer/dense_adamw.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "worker/optimizer/in_process_exchange.h"

namespace demod {
namespace {

std::vector<NamedTensor> Params() {
  return {{"w", at::arange(0, 2 * 128, at::kFloat).view({2, 128}) / 100},  // 2-D, 2 chunks
          {"b", at::ones({96}, at::kFloat)}};                              // 1-D
}

at::Tensor Gradient(int worker, int step, const at::Tensor& like) {
  return at::sin(at::arange(like.numel(), at::kFloat) * (worker + 1) + step).view(like.sizes());
}

// Two workers with different gradients through the real codec and aggregation: both end with
// the parameters AdamW gives on the mean gradient, computed here in double.
TEST(DenseAdamWTest, WorkersApplyAdamWToTheMeanGradientAndStayIdentical) {
  AdamWOptions options;
  options.lr = 0.01;
  options.weight_decay = 0.1;
  options.chunk = 64;
  InProcessHub hub(2);
  std::vector<std::vector<NamedTensor>> params = {Params(), Params()};
  std::vector<std::unique_ptr<InProcessExchange>> exchanges;
  std::vector<std::unique_ptr<DenseAdamW>> optimizers;
  for (int w = 0; w < 2; ++w) {
    for (auto& [name, p] : params[w]) p.requires_grad_(true);
    exchanges.push_back(std::make_unique<InProcessExchange>(&hub, w));
    auto optimizer = DenseAdamW::Create(params[w], options, exchanges.back().get());
    ASSERT_TRUE(optimizer.ok()) << optimizer.status();
    optimizers.push_back(*std::move(optimizer));
  }
  std::vector<at::Tensor> p_ref, m_ref, v_ref;
  for (const auto& [name, p] : Params()) {
    p_ref.push_back(p.to(at::kDouble));
    m_ref.push_back(at::zeros_like(p_ref.back()));
    v_ref.push_back(at::zeros_like(p_ref.back()));
  }
  for (int step = 1; step <= 5; ++step) {
    std::vector<std::thread> threads;
    for (int w = 0; w < 2; ++w) {
      for (auto& [name, p] : params[w]) p.mutable_grad() = Gradient(w, step, p);
      threads.emplace_back([&, w] { ASSERT_TRUE(optimizers[w]->Step().ok()); });
    }
    for (std::thread& t : threads) t.join();
    for (size_t i = 0; i < p_ref.size(); ++i) {
      const at::Tensor g = (Gradient(0, step, p_ref[i]).to(at::kDouble) +
                            Gradient(1, step, p_ref[i]).to(at::kDouble)) /
                           2;
      m_ref[i] = 0.9 * m_ref[i] + 0.1 * g;
      v_ref[i] = 0.95 * v_ref[i] + 0.05 * g * g;
      const double b1 = 1 - std::pow(0.9, step), b2 = 1 - std::pow(0.95, step);
      p_ref[i] =
          p_ref[i] * (1 - 0.01 * 0.1) - 0.01 * (m_ref[i] / b1) / ((v_ref[i] / b2).sqrt() + 1e-8);
    }
  }
  for (size_t i = 0; i < p_ref.size(); ++i) {
    EXPECT_TRUE(params[0][i].second.equal(params[1][i].second)) << params[0][i].first;
    EXPECT_LT((params[0][i].second.to(at::kDouble) - p_ref[i]).abs().max().item<double>(), 1e-5)
        << params[0][i].first;
  }
  EXPECT_EQ(optimizers[0]->step_count(), 5);
  // Whole f32 gradients, no indices: 4 bytes a value plus headers.
  const int64_t values = 2 * 128 + 96;
  EXPECT_GE(optimizers[0]->last_traffic().bytes_sent, values * 4);
  EXPECT_LT(optimizers[0]->last_traffic().bytes_sent, values * 4 + 100);
  EXPECT_EQ(optimizers[0]->SharedState().size(), 4u);
}

TEST(DenseAdamWTest, RefusesSparseEncodings) {
  InProcessHub hub(1);
  InProcessExchange exchange(&hub, 0);
  AdamWOptions options;
  options.encoding = ValueEncoding::kSign;
  EXPECT_EQ(DenseAdamW::Create(Params(), options, &exchange).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace demod
