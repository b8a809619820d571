#include "worker/optimizer/demo_optimizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <thread>

#include "common/payload_codec.h"
#include "tests/support/status_matchers.h"
#include "worker/optimizer/chunked_dct.h"
#include "worker/optimizer/in_process_exchange.h"

namespace demod {
namespace {

using ::testing::HasSubstr;

// The reference algorithm in the parameter domain, one simulated worker at a time, written
// independently of the optimizer (no DCT-domain momentum, no codec): the yardstick.
struct ReferenceWorker {
  std::vector<at::Tensor> delta;
};

void ReferenceStep(std::vector<at::Tensor>& params, std::vector<ReferenceWorker>& workers,
                   const std::vector<std::vector<at::Tensor>>& grads, const DemoOptions& o) {
  for (size_t i = 0; i < params.size(); ++i) {
    ChunkLayout l =
        *MakeChunkLayout(params[i].sizes().vec(), o.compression_chunk(), o.compression_topk());
    at::Tensor sum = at::zeros({l.num_chunks(), l.chunk_size()}, at::kDouble);
    at::Tensor count = at::zeros({l.num_chunks(), l.chunk_size()}, at::kDouble);
    for (size_t w = 0; w < workers.size(); ++w) {
      at::Tensor& d = workers[w].delta[i];
      d.mul_(o.compression_decay()).add_(grads[w][i], o.lr());
      at::Tensor e = EncodeChunks(d, l);
      at::Tensor idx = std::get<1>(e.abs().topk(l.topk, -1));
      at::Tensor val = e.gather(-1, idx);
      at::Tensor sent = at::zeros_like(e).scatter_(-1, idx, val);
      d.sub_(DecodeChunks(sent, l).reshape(d.sizes()));
      sum.scatter_add_(-1, idx, val);
      count.scatter_add_(-1, idx, at::ones_like(val));
    }
    at::Tensor mean = sum / count.clamp_min(1);
    at::Tensor u = DecodeChunks(mean, l).reshape(params[i].sizes());
    params[i].mul_(1 - o.lr() * o.weight_decay()).sub_(u.sign(), o.lr());
  }
}

// Runs `num_workers` optimizers on threads for `steps` steps with gradients from grad_fn.
struct Cluster {
  std::vector<std::vector<at::Tensor>> params;  // [worker][param]
  std::vector<std::unique_ptr<InProcessExchange>> exchanges;
  std::vector<std::unique_ptr<DemoOptimizer>> optimizers;
};

Cluster MakeCluster(InProcessHub* hub, const std::vector<at::Tensor>& init,
                    const DemoOptions& options) {
  Cluster c;
  for (int w = 0; w < hub->num_workers(); ++w) {
    std::vector<at::Tensor> ps;
    std::vector<NamedTensor> named;
    for (size_t i = 0; i < init.size(); ++i) {
      ps.push_back(init[i].clone());
      named.emplace_back("p" + std::to_string(i), ps.back());
    }
    c.exchanges.push_back(std::make_unique<InProcessExchange>(hub, w));
    c.optimizers.push_back(
        ValueOrStop(DemoOptimizer::Create(named, options, c.exchanges.back().get())));
    c.params.push_back(ps);
  }
  return c;
}

// grads[w][i] for one step.
void StepAll(Cluster& c, const std::vector<std::vector<at::Tensor>>& grads) {
  std::vector<std::thread> threads;
  std::vector<absl::Status> status(c.optimizers.size());
  for (size_t w = 0; w < c.optimizers.size(); ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = 0; i < c.params[w].size(); ++i) {
        c.params[w][i].mutable_grad() = grads[w][i].to(c.params[w][i].scalar_type());
      }
      status[w] = c.optimizers[w]->Step();
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : status) ASSERT_TRUE(s.ok()) << s;
}

std::vector<std::vector<at::Tensor>> RandomGrads(int workers, const std::vector<at::Tensor>& init) {
  std::vector<std::vector<at::Tensor>> g(workers);
  for (int w = 0; w < workers; ++w) {
    for (const at::Tensor& p : init) {
      // Rounded to the parameters' dtype, so the reference sees the optimizer's input.
      g[w].push_back(at::randn(p.sizes(), at::kDouble).to(p.scalar_type()).to(at::kDouble));
    }
  }
  return g;
}

// Runs the optimizer and the reference side by side for `steps` steps on tensors of every
// rank; returns the largest momentum error and the fraction of parameter elements that differ.
struct Agreement {
  double max_momentum_error = 0;
  double mismatched_params = 0;
  double max_param_error = 0;
};

Agreement CompareWithReference(at::ScalarType dtype, int steps) {
  at::manual_seed(1);
  // 2-D, 1-D, rank 0, a conv kernel (rank 4) and a rank-3 tensor.
  std::vector<at::Tensor> init = {at::randn({64, 96}, dtype), at::randn({40}, dtype),
                                  at::randn({}, dtype), at::randn({8, 3, 3, 3}, dtype),
                                  at::randn({6, 4, 10}, dtype)};
  DemoOptions options = DemoOptions(0.01)
                            .compression_topk(5)
                            .compression_chunk(16)
                            .compression_decay(0.9)
                            .weight_decay(0.1);
  const int workers = 3;
  InProcessHub hub(workers);
  Cluster cluster = MakeCluster(&hub, init, options);
  std::vector<at::Tensor> ref_params;
  for (const at::Tensor& p : init) ref_params.push_back(p.to(at::kDouble));
  std::vector<ReferenceWorker> ref(workers);
  for (auto& r : ref) {
    for (const at::Tensor& p : init) r.delta.push_back(at::zeros_like(p, at::kDouble));
  }
  for (int step = 0; step < steps; ++step) {
    auto grads = RandomGrads(workers, init);
    StepAll(cluster, grads);
    ReferenceStep(ref_params, ref, grads, options);
  }
  Agreement a;
  int64_t elements = 0, mismatched = 0;
  for (int w = 0; w < workers; ++w) {
    for (size_t i = 0; i < init.size(); ++i) {
      at::Tensor dm = (cluster.optimizers[w]->Momentum(i).to(at::kDouble) - ref[w].delta[i]).abs();
      a.max_momentum_error = std::max(a.max_momentum_error, dm.max().item<double>());
      at::Tensor dp = (cluster.params[w][i].to(at::kDouble) - ref_params[i]).abs();
      a.max_param_error = std::max(a.max_param_error, dp.max().item<double>());
      mismatched += (dp > 1e-5).sum().item<int64_t>();
      elements += dp.numel();
    }
  }
  a.mismatched_params = static_cast<double>(mismatched) / elements;
  return a;
}

TEST(DemoOptimizerTest, MatchesTheReferenceAlgorithmOnEveryRankInDouble) {
  const Agreement a = CompareWithReference(at::kDouble, 6);
  EXPECT_LT(a.max_momentum_error, 1e-9);
  EXPECT_LT(a.max_param_error, 1e-9);
}

TEST(DemoOptimizerTest, MatchesTheReferenceAlgorithmOnEveryRankInFloat) {
  // float32 takes the CPU kernels (fused encode/select, sparse decode with the update).
  // Rounding may flip the sign of a decoded value that is numerically zero: a few elements
  // may then differ by 2 lr.
  const Agreement a = CompareWithReference(at::kFloat, 6);
  EXPECT_LT(a.max_momentum_error, 1e-5);
  EXPECT_LT(a.mismatched_params, 0.01);
  EXPECT_LE(a.max_param_error, 6 * 0.01 * 2 + 1e-4);
}

TEST(DemoOptimizerTest, ParametersStayIdenticalWhileMomentaDiverge) {
  at::manual_seed(2);
  std::vector<at::Tensor> init = {at::randn({128, 64}), at::randn({64})};
  InProcessHub hub(2);
  Cluster c = MakeCluster(&hub, init, DemoOptions(1e-3));
  for (int step = 0; step < 5; ++step) {
    std::vector<std::vector<at::Tensor>> grads = {{at::randn({128, 64}), at::randn({64})},
                                                  {at::randn({128, 64}), at::randn({64})}};
    StepAll(c, grads);
  }
  for (size_t i = 0; i < init.size(); ++i) {
    EXPECT_TRUE(at::equal(c.params[0][i], c.params[1][i]));
    EXPECT_FALSE(at::equal(c.optimizers[0]->Momentum(i), c.optimizers[1]->Momentum(i)));
    EXPECT_FALSE(at::equal(c.params[0][i], init[i]));
  }
}

TEST(DemoOptimizerTest, TopkIsClampedToTheChunkSize) {
  // topk 100 on chunks of 8: everything is sent, nothing stays in momentum.
  InProcessHub hub(1);
  Cluster c = MakeCluster(&hub, {at::zeros({16})},
                          DemoOptions(0.1).compression_topk(100).compression_chunk(8));
  StepAll(c, {{at::randn({16})}});
  EXPECT_EQ(c.optimizers[0]->layout_table()[0].layout.topk, 8);
  EXPECT_EQ(c.optimizers[0]->last_payload().tensors[0].indices.size(), 16u);
  EXPECT_LT(c.optimizers[0]->Momentum(0).abs().max().item<double>(), 1e-7);
}

TEST(DemoOptimizerTest, SingleWorkerStepIsSignOfItsSelection) {
  // With one worker and everything selected, the update is -lr * sign(lr * grad).
  InProcessHub hub(1);
  at::Tensor grad = at::tensor({3.0f, -2.0f, 0.5f, -0.25f});
  Cluster c = MakeCluster(&hub, {at::zeros({4})}, DemoOptions(0.5).compression_topk(4));
  StepAll(c, {{grad}});
  EXPECT_TRUE(at::allclose(c.params[0][0], -0.5 * grad.sign(), 0, 1e-6));
}

TEST(DemoOptimizerTest, Bfloat16ParametersStayBfloat16WithFloatMomentum) {
  at::manual_seed(3);
  InProcessHub hub(2);
  std::vector<at::Tensor> init = {at::randn({32, 64}).to(at::kBFloat16)};
  Cluster c = MakeCluster(&hub, init, DemoOptions(1e-2));
  StepAll(c, {{at::randn({32, 64})}, {at::randn({32, 64})}});
  EXPECT_EQ(c.params[0][0].scalar_type(), at::kBFloat16);
  EXPECT_EQ(c.optimizers[0]->Momentum(0).scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(c.params[0][0], c.params[1][0]));
  EXPECT_FALSE(at::equal(c.params[0][0], init[0]));
}

TEST(DemoOptimizerTest, ContributionLeftOutIsKeptInMomentum) {
  at::manual_seed(4);
  InProcessHub hub(2);
  hub.SetLeftOut([](uint32_t worker, int64_t step) { return worker == 1 && step == 1; });
  std::vector<at::Tensor> init = {at::zeros({64})};
  DemoOptions options =
      DemoOptions(1.0).compression_topk(4).compression_chunk(64).compression_decay(1.0);
  Cluster c = MakeCluster(&hub, init, options);
  at::Tensor g0 = at::randn({64});
  at::Tensor g1 = at::randn({64});
  StepAll(c, {{g0}, {g1}});
  // Worker 1 was left out: its momentum still holds its whole gradient (decay 1, lr 1).
  EXPECT_TRUE(at::allclose(c.optimizers[1]->Momentum(0), g1, 1e-5, 1e-5));
  // Worker 0 was included: it no longer holds what it sent.
  EXPECT_FALSE(at::allclose(c.optimizers[0]->Momentum(0), g0, 1e-5, 1e-5));
  // Both applied the same aggregate (worker 0's selection alone).
  EXPECT_TRUE(at::equal(c.params[0][0], c.params[1][0]));
}

TEST(DemoOptimizerTest, Bfloat16WireKeepsTheRoundingInMomentum) {
  InProcessHub hub(1);
  DemoOptions options = DemoOptions(1.0)
                            .compression_topk(1)
                            .compression_chunk(1)
                            .compression_decay(1.0)
                            .value_encoding(ValueEncoding::kBFloat16);
  Cluster c = MakeCluster(&hub, {at::zeros({1})}, options);
  const float g = 1.00390625f + 0.001f;  // not representable in bf16
  StepAll(c, {{at::tensor({g})}});
  const double residual = c.optimizers[0]->Momentum(0).item<double>();
  EXPECT_NEAR(residual, g - BFloat16ToFloat(FloatToBFloat16(g)), 1e-7);
  EXPECT_NE(residual, 0.0);
}

TEST(DemoOptimizerTest, SignWireSendsOneBitPerValueAndClearsSelection) {
  // Everything is selected (topk = chunk): with signs on the wire nothing stays behind, and
  // 8 values cost 1 byte instead of 32.
  DemoOptions options = DemoOptions(1.0)
                            .compression_topk(8)
                            .compression_chunk(8)
                            .compression_decay(1.0)
                            .value_encoding(ValueEncoding::kSign);
  InProcessHub hub(1);
  Cluster sign = MakeCluster(&hub, {at::zeros({8})}, options);
  StepAll(sign, {{at::tensor({0.f, 0.f, 5.f, 0.f, 0.f, -7.f, 0.f, 0.f})}});
  EXPECT_LT(sign.optimizers[0]->Momentum(0).abs().max().item<double>(), 1e-6);

  InProcessHub hub32(1);
  Cluster f32 = MakeCluster(&hub32, {at::zeros({8})},
                            DemoOptions(options).value_encoding(ValueEncoding::kFloat32));
  StepAll(f32, {{at::ones({8})}});
  EXPECT_EQ(
      f32.optimizers[0]->last_traffic().bytes_sent - sign.optimizers[0]->last_traffic().bytes_sent,
      31);
}

TEST(DemoOptimizerTest, TrafficIsTheEncodedSize) {
  InProcessHub hub(1);
  DemoOptions options = DemoOptions(0.1);
  Cluster c = MakeCluster(&hub, {at::zeros({128, 128})}, options);
  StepAll(c, {{at::randn({128, 128})}});
  const StepTraffic& t = c.optimizers[0]->last_traffic();
  absl::StatusOr<std::string> bytes =
      EncodeStepPayload(c.optimizers[0]->last_payload(), c.optimizers[0]->layout_table());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(t.bytes_sent, static_cast<int64_t>(bytes->size()));
  EXPECT_EQ(t.dense_fp32_bytes, 128 * 128 * 4);
  EXPECT_GT(t.bytes_received, 0);
  // 4 chunks x 32 coefficients of (u16 index + f32 value), plus framing.
  EXPECT_GE(t.bytes_sent, 4 * 32 * 6);
  EXPECT_LT(t.bytes_sent, 4 * 32 * 6 + 128);
}

class FailingExchange : public Exchange {
 public:
  absl::Status Register(const LayoutTable&) override { return absl::OkStatus(); }
  absl::StatusOr<ExchangeResult> ExchangeStep(int64_t, std::string) override {
    return absl::UnavailableError("coordinator unreachable");
  }
};

TEST(DemoOptimizerTest, ExchangeFailureLeavesParametersAndKeepsGradientInMomentum) {
  FailingExchange exchange;
  at::Tensor p = at::randn({16});
  const at::Tensor before = p.clone();
  auto opt = DemoOptimizer::Create({{"w", p}}, DemoOptions(1.0).compression_decay(1.0), &exchange);
  ASSERT_TRUE(opt.ok());
  at::Tensor g = at::randn({16});
  p.mutable_grad() = g;
  absl::Status s = (*opt)->Step();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("coordinator unreachable"));
  EXPECT_TRUE(at::equal(p, before));
  EXPECT_TRUE(at::allclose((*opt)->Momentum(0), g, 1e-5, 1e-6));
  EXPECT_EQ((*opt)->step_count(), 0);
}

TEST(DemoOptimizerTest, NonFiniteGradientFailsTheStepAndNamesTheTensor) {
  InProcessHub hub(1);
  InProcessExchange exchange(&hub, 0);
  at::Tensor a = at::zeros({64, 64});
  at::Tensor b = at::zeros({64});
  auto opt = DemoOptimizer::Create({{"a", a}, {"b", b}}, DemoOptions(1.0).compression_decay(1.0),
                                   &exchange);
  ASSERT_TRUE(opt.ok());
  a.mutable_grad() = at::ones({64, 64});
  b.mutable_grad() = at::ones({64});
  b.mutable_grad()[5] = std::numeric_limits<float>::quiet_NaN();
  absl::Status s = (*opt)->Step();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'b'"));
  EXPECT_TRUE(at::equal(a, at::zeros({64, 64})));
  // The finite gradient stays in momentum; the non-finite chunk is dropped.
  EXPECT_TRUE(at::allclose((*opt)->Momentum(0), at::ones({64, 64}), 1e-5, 1e-5));
  EXPECT_TRUE(at::isfinite((*opt)->Momentum(1)).all().item<bool>());
  b.mutable_grad()[5] = 0;
  EXPECT_OK((*opt)->Step());
  EXPECT_EQ((*opt)->step_count(), 1);
}

TEST(DemoOptimizerTest, RejectsBadOptionsAndParameters) {
  FailingExchange exchange;
  EXPECT_THAT(
      DemoOptimizer::Create({{"w", at::zeros({4})}}, DemoOptions(-1), &exchange).status().message(),
      HasSubstr("lr"));
  EXPECT_THAT(DemoOptimizer::Create({{"w", at::zeros({4})}}, DemoOptions(0.1).compression_topk(0),
                                    &exchange)
                  .status()
                  .message(),
              HasSubstr("compression_topk"));
  EXPECT_THAT(DemoOptimizer::Create({{"w", at::zeros({4}, at::kLong)}}, DemoOptions(), &exchange)
                  .status()
                  .message(),
              HasSubstr("'w'"));
  EXPECT_THAT(DemoOptimizer::Create({{"w", at::zeros({4})}, {"w", at::zeros({2})}}, DemoOptions(),
                                    &exchange)
                  .status()
                  .message(),
              HasSubstr("duplicate"));
}

TEST(DemoOptimizerTest, WorkersWithDifferentTablesAreRefused) {
  InProcessHub hub(2);
  InProcessExchange e0(&hub, 0), e1(&hub, 1);
  ASSERT_TRUE(DemoOptimizer::Create({{"w", at::zeros({64, 64})}}, DemoOptions(), &e0).ok());
  absl::StatusOr<std::unique_ptr<DemoOptimizer>> second =
      DemoOptimizer::Create({{"w", at::zeros({64, 32})}}, DemoOptions(), &e1);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("'w'"));
}

}  // namespace
}  // namespace demod
