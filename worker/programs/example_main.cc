// demod-example: the smallest complete use of the worker library in a training loop of one's
// own. A two-layer MLP learns y = sin(3x) + x/2 from random x; the DeMo optimizer and the
// coordinator do the rest. docs/worker.md walks through it.
//
//   build/bin/demod-coordinator --total_steps 200 --min_workers 2 &
//   build/bin/demod-example --coordinator 127.0.0.1:7070 --name a &
//   build/bin/demod-example --coordinator 127.0.0.1:7070 --name b
//
// Exit code 0 when the run finished; 1 with the reason otherwise.
#include <torch/nn.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "worker/training/demo_session.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070", "the coordinator's address");
ABSL_FLAG(std::string, name, "example", "this worker's name in the run");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // Each worker draws its own data. Its initial parameters do not matter: the first worker's
  // become the run's, and every later worker receives them when it joins.
  torch::manual_seed(std::hash<std::string>()(absl::GetFlag(FLAGS_name)));

  // 1. The user's model.
  torch::nn::Sequential model(torch::nn::Linear(1, 64), torch::nn::Tanh(),
                              torch::nn::Linear(64, 1));
  std::vector<demod::NamedTensor> parameters;
  for (const auto& p : model->named_parameters()) parameters.emplace_back(p.key(), p.value());

  // 2. Join the run with the model's parameters.
  demod::SessionOptions options;
  options.client.target = absl::GetFlag(FLAGS_coordinator);
  options.client.join.set_worker_name(absl::GetFlag(FLAGS_name));
  absl::StatusOr<std::unique_ptr<demod::DemoSession>> session =
      demod::DemoSession::Join(options, parameters);
  if (absl::IsOutOfRange(session.status())) {  // the run finished before this worker came
    std::printf("run finished\n");
    return 0;
  }
  if (!session.ok()) {
    std::fprintf(stderr, "demod-example: %s\n", session.status().ToString().c_str());
    return 1;
  }

  // 3. The usual loop; DemoSession::Step replaces optimizer.step() and zero_grad().
  while (!(*session)->finished()) {
    // Behind the run? Steps that closed without this worker are applied, not computed.
    absl::StatusOr<int> skipped = (*session)->SkipClosedSteps();
    if (!skipped.ok()) {
      std::fprintf(stderr, "demod-example: %s\n", skipped.status().ToString().c_str());
      return 1;
    }
    if (*skipped > 0) continue;
    const absl::Time started = absl::Now();
    torch::Tensor x = torch::rand({64, 1}) * 4 - 2;
    torch::Tensor y = torch::sin(3 * x) + x / 2;
    torch::Tensor loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    const int64_t step = (*session)->next_step();
    // The samples behind the gradient: what a run weighing contributions by samples needs.
    if (absl::Status s = (*session)->Step(/*samples=*/64); !s.ok()) {
      std::fprintf(stderr, "demod-example: step %lld: %s\n", static_cast<long long>(step),
                   s.ToString().c_str());
      return 1;
    }
    // Loss and throughput for the coordinator's metrics and dashboards.
    if (absl::Status s = (*session)->Report(loss.item<double>(), /*tokens=*/64,
                                            absl::ToDoubleSeconds(absl::Now() - started),
                                            /*validation_loss=*/std::nan(""), /*samples=*/64);
        !s.ok()) {
      std::fprintf(stderr, "demod-example: report: %s\n", s.ToString().c_str());
    }
    if (step % 20 == 0) {
      std::printf("step %lld loss %.4f (sent %lld bytes, an fp32 exchange: %lld)\n",
                  static_cast<long long>(step), loss.item<double>(),
                  static_cast<long long>((*session)->last_traffic().bytes_sent),
                  static_cast<long long>((*session)->last_traffic().dense_fp32_bytes));
    }
  }
  std::printf("run finished\n");
  return 0;
}
