#include "server/batch_balancer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace demod {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

absl::Status BatchBalancer::Validate(const BalancerOptions& options) {
  if (options.global_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the global batch must be >= 1, got ", options.global_batch));
  }
  if (!(options.smoothing > 0 && options.smoothing <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the smoothing must be in (0, 1], got ", options.smoothing));
  }
  if (!(options.hysteresis >= 0 && std::isfinite(options.hysteresis))) {
    return absl::InvalidArgumentError(
        absl::StrCat("the hysteresis must be finite and >= 0, got ", options.hysteresis));
  }
  return absl::OkStatus();
}

BatchBalancer::BatchBalancer(const BalancerOptions& options) : options_(options) {}

void BatchBalancer::SetLimits(WorkerId worker, int64_t min_samples, int64_t max_samples) {
  Worker& w = workers_[worker];
  w.min_samples = std::max<int64_t>(1, min_samples);
  w.max_samples = std::max(w.min_samples, max_samples);
}

void BatchBalancer::Observe(WorkerId worker, double samples_per_second) {
  if (!std::isfinite(samples_per_second) || samples_per_second <= 0) return;
  Worker& w = workers_[worker];
  w.throughput = w.throughput.has_value() ? options_.smoothing * samples_per_second +
                                                (1 - options_.smoothing) * *w.throughput
                                          : samples_per_second;
}

void BatchBalancer::Remove(WorkerId worker) {
  workers_.erase(worker);
  in_force_.erase(worker);
}

std::optional<double> BatchBalancer::throughput(WorkerId worker) const {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return std::nullopt;
  return it->second.throughput;
}

// Proportional shares t * weight_i, clamped to [lo_i, hi_i], with t chosen so they sum to the
// global batch: the clamped ones are fixed at their limit, t is found again for the others,
// until none moves (at most one round per worker).
std::vector<double> BatchBalancer::WaterFill(const std::vector<double>& weights,
                                             const std::vector<int64_t>& lo,
                                             const std::vector<int64_t>& hi) const {
  const size_t n = weights.size();
  std::vector<double> share(n, 0);
  std::vector<bool> fixed(n, false);
  for (size_t round = 0; round <= n; ++round) {
    double budget = static_cast<double>(options_.global_batch);
    double free_weight = 0;
    for (size_t i = 0; i < n; ++i) {
      if (fixed[i]) {
        budget -= share[i];
      } else {
        free_weight += weights[i];
      }
    }
    if (free_weight <= 0) break;
    const double t = std::max(0.0, budget) / free_weight;
    bool moved = false;
    for (size_t i = 0; i < n; ++i) {
      if (fixed[i]) continue;
      share[i] = t * weights[i];
      if (share[i] < lo[i] || share[i] > hi[i]) {
        share[i] = std::clamp(share[i], static_cast<double>(lo[i]), static_cast<double>(hi[i]));
        fixed[i] = true;
        moved = true;
      }
    }
    if (!moved) break;
  }
  return share;
}

std::map<WorkerId, int64_t> BatchBalancer::Shares(const std::vector<WorkerId>& unsorted) {
  std::vector<WorkerId> ids = unsorted;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const size_t n = ids.size();
  if (n == 0) {
    in_force_.clear();
    return {};
  }
  std::vector<double> known;
  for (WorkerId id : ids) {
    auto it = workers_.find(id);
    if (it != workers_.end() && it->second.throughput.has_value()) {
      known.push_back(*it->second.throughput);
    }
  }
  const double stand_in = known.empty() ? 1.0 : Median(known);
  std::vector<double> weights(n);
  std::vector<int64_t> lo(n), hi(n);
  for (size_t i = 0; i < n; ++i) {
    const Worker& w = workers_[ids[i]];
    weights[i] = w.throughput.value_or(stand_in);
    lo[i] = std::min(w.min_samples, options_.global_batch);
    hi[i] = w.max_samples > 0 ? w.max_samples : options_.global_batch;
    hi[i] = std::max(hi[i], lo[i]);
  }
  const std::vector<double> ideal = WaterFill(weights, lo, hi);

  // Whole samples: the floors, then one more each to the largest remainders (lower id first)
  // while the total is short of the global batch and the worker is below its maximum.
  std::vector<int64_t> share(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    share[i] = std::clamp(static_cast<int64_t>(std::floor(ideal[i])), lo[i], hi[i]);
    total += share[i];
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ideal[a] - std::floor(ideal[a]) > ideal[b] - std::floor(ideal[b]);
  });
  for (size_t k = 0; total < options_.global_batch && k < n; ++k) {
    const size_t i = order[k];
    if (share[i] < hi[i]) {
      ++share[i];
      ++total;
    }
  }

  std::map<WorkerId, int64_t> proposed;
  for (size_t i = 0; i < n; ++i) proposed[ids[i]] = share[i];
  // The slowest worker's expected compute time sets the step's: keep the shares in force
  // (same workers, within their limits, same total) unless the proposal shortens it by more
  // than the hysteresis.
  bool valid = in_force_.size() == n;
  double in_force_makespan = 0;
  double proposed_makespan = 0;
  int64_t in_force_total = 0;
  for (size_t i = 0; valid && i < n; ++i) {
    auto it = in_force_.find(ids[i]);
    if (it == in_force_.end() || it->second < lo[i] || it->second > hi[i]) {
      valid = false;
      break;
    }
    in_force_total += it->second;
    in_force_makespan = std::max(in_force_makespan, it->second / weights[i]);
    proposed_makespan = std::max(proposed_makespan, share[i] / weights[i]);
  }
  if (valid && in_force_total == total &&
      in_force_makespan <= proposed_makespan * (1 + options_.hysteresis)) {
    return in_force_;
  }
  in_force_ = proposed;
  return proposed;
}

}  // namespace demod
