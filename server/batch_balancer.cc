#include "server/batch_balancer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace demod {
namespace {

// A time this far (relative) from the model's prediction means the worker changed speed.
constexpr double kChangedSpeed = 0.3;

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

void BatchBalancer::Observe(WorkerId worker, int64_t samples, double seconds) {
  if (samples < 1 || !std::isfinite(seconds) || seconds <= 0) return;
  Worker& w = workers_[worker];
  ++w.observations;
  // A time far from what a fitted model predicts: the worker changed speed, and its earlier
  // times no longer hold (smoothing the new one into them would take steps to forget them).
  // From one size alone the overhead is unknown, so a prediction to another size can miss.
  if (w.by_samples.size() > 1) {
    const double predicted = Fit(w)->Seconds(static_cast<double>(samples));
    if (std::abs(seconds - predicted) > kChangedSpeed * predicted) w.by_samples.clear();
  }
  auto [it, added] = w.by_samples.try_emplace(samples, Timing{seconds, 0});
  if (!added) {
    it->second.seconds =
        options_.smoothing * seconds + (1 - options_.smoothing) * it->second.seconds;
  }
  it->second.seen = w.observations;
  w.last_samples = samples;
  if (w.by_samples.size() > kSizesKept) {
    w.by_samples.erase(std::min_element(
        w.by_samples.begin(), w.by_samples.end(),
        [](const auto& a, const auto& b) { return a.second.seen < b.second.seen; }));
  }
}

void BatchBalancer::Remove(WorkerId worker) {
  workers_.erase(worker);
  in_force_.erase(worker);
}

// Least squares through the smoothed times; with a single size, or a fit with a negative
// overhead or slope (noise, or a worker whose time does not grow with its samples), the
// proportional cost through all of them.
std::optional<BatchBalancer::Cost> BatchBalancer::Fit(const Worker& worker) {
  const auto& points = worker.by_samples;
  if (points.empty()) return std::nullopt;
  const auto n = static_cast<double>(points.size());
  double mean_x = 0, mean_t = 0, total_x = 0, total_t = 0;
  for (const auto& [samples, timing] : points) {
    total_x += static_cast<double>(samples);
    total_t += timing.seconds;
  }
  mean_x = total_x / n;
  mean_t = total_t / n;
  if (points.size() > 1) {
    double variance = 0, covariance = 0;
    for (const auto& [samples, timing] : points) {
      const double dx = static_cast<double>(samples) - mean_x;
      variance += dx * dx;
      covariance += dx * (timing.seconds - mean_t);
    }
    const double slope = covariance / variance;
    const double overhead = mean_t - slope * mean_x;
    if (slope > 0 && overhead >= 0) return Cost{overhead, slope};
  }
  return Cost{0, total_t / total_x};
}

std::optional<BatchBalancer::Cost> BatchBalancer::cost(WorkerId worker) const {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return std::nullopt;
  return Fit(it->second);
}

std::optional<double> BatchBalancer::throughput(WorkerId worker) const {
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second.by_samples.empty()) return std::nullopt;
  const Worker& w = it->second;
  return static_cast<double>(w.last_samples) / w.by_samples.at(w.last_samples).seconds;
}

// Shares s_i = (T - overhead_i) / per_sample_i, each clamped to [lo_i, hi_i], with the common
// compute time T chosen so that they sum to the global batch. The clamped sum grows with T, so
// T is found by bisection between the time at which every worker is at its minimum and the one
// at which every worker is at its maximum. (Fixing the workers past a limit and solving again
// for the others goes wrong when some pass their minimum and others their maximum at once.)
std::vector<double> BatchBalancer::WaterFill(const std::vector<Cost>& costs,
                                             const std::vector<int64_t>& lo,
                                             const std::vector<int64_t>& hi) const {
  const size_t n = costs.size();
  std::vector<double> share(n);
  const auto fill = [&](double t) {
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      share[i] = std::clamp((t - costs[i].overhead) / costs[i].per_sample,
                            static_cast<double>(lo[i]), static_cast<double>(hi[i]));
      total += share[i];
    }
    return total;
  };
  double low = HUGE_VAL, high = 0;
  for (size_t i = 0; i < n; ++i) {
    low = std::min(low, costs[i].Seconds(static_cast<double>(lo[i])));
    high = std::max(high, costs[i].Seconds(static_cast<double>(hi[i])));
  }
  const auto target = static_cast<double>(options_.global_batch);
  for (int i = 0; i < 200 && low < high; ++i) {
    const double mid = low + (high - low) / 2;
    if (mid <= low || mid >= high) break;  // as close as doubles get
    (fill(mid) < target ? low : high) = mid;
  }
  fill(high);
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
  std::vector<std::optional<Cost>> fitted(n);
  std::vector<double> known;  // seconds per sample of those measured
  for (size_t i = 0; i < n; ++i) {
    auto it = workers_.find(ids[i]);
    if (it != workers_.end()) fitted[i] = Fit(it->second);
    if (fitted[i].has_value()) known.push_back(1 / *throughput(ids[i]));
  }
  const Cost stand_in{0, known.empty() ? 1.0 : Median(known)};
  std::vector<Cost> costs(n);
  std::vector<int64_t> lo(n), hi(n);
  for (size_t i = 0; i < n; ++i) {
    const Worker& w = workers_[ids[i]];
    costs[i] = fitted[i].value_or(stand_in);
    lo[i] = std::min(w.min_samples, options_.global_batch);
    hi[i] = w.max_samples > 0 ? w.max_samples : options_.global_batch;
    hi[i] = std::max(hi[i], lo[i]);
  }
  const std::vector<double> ideal = WaterFill(costs, lo, hi);

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
  // The slowest worker's modelled compute time sets the step's: keep the shares in force
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
    in_force_makespan = std::max(in_force_makespan, costs[i].Seconds(it->second));
    proposed_makespan = std::max(proposed_makespan, costs[i].Seconds(share[i]));
  }
  if (valid && in_force_total == total &&
      in_force_makespan <= proposed_makespan * (1 + options_.hysteresis)) {
    return in_force_;
  }
  in_force_ = proposed;
  return proposed;
}

}  // namespace demod
