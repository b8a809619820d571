#include "server/step_machine.h"

#include <algorithm>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace demod {
namespace {

constexpr size_t kMinDurationsForAdaptive = 3;

bool Contains(const std::vector<WorkerId>& v, WorkerId w) {
  return std::find(v.begin(), v.end(), w) != v.end();
}

void Erase(std::vector<WorkerId>& v, WorkerId w) {
  v.erase(std::remove(v.begin(), v.end(), w), v.end());
}

absl::Duration Median(std::vector<absl::Duration> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

Action Make(Action::Kind kind, WorkerId worker, int64_t step, std::string reason) {
  Action a;
  a.kind = kind;
  a.worker = worker;
  a.step = step;
  a.reason = std::move(reason);
  return a;
}

}  // namespace

bool operator==(const Action& a, const Action& b) {
  return a.kind == b.kind && a.worker == b.worker && a.donor == b.donor && a.step == b.step &&
         a.workers == b.workers;
}

std::string ActionToString(const Action& a) {
  static const char* const kNames[] = {"welcome",     "request_state", "open_step", "close_step",
                                       "reject_late", "evict",         "pause",     "finish"};
  static_assert(std::size(kNames) == static_cast<size_t>(Action::Kind::kLast) + 1);
  return absl::StrCat(kNames[static_cast<int>(a.kind)], " worker=", a.worker, " donor=", a.donor,
                      " step=", a.step, " workers=[", absl::StrJoin(a.workers, ","), "] (",
                      a.reason, ")");
}

StepMachine::StepMachine(const RunConfig& config, int64_t completed_steps, bool resumed)
    : config_(config), completed_steps_(completed_steps), resumed_(resumed) {
  finished_ = completed_steps_ >= config_.total_steps;
}

std::optional<int64_t> StepMachine::open_step() const {
  if (!open_.has_value()) return std::nullopt;
  return open_->step;
}

std::optional<absl::Time> StepMachine::deadline() const {
  if (!open_.has_value()) return std::nullopt;
  return open_->deadline;
}

int StepMachine::active_count() const {
  int n = 0;
  for (const auto& [id, m] : members_) n += m.state == Member::State::kActive;
  return n;
}

absl::Duration StepMachine::StepBudget() const {
  const DeadlinePolicy& p = config_.deadline;
  if (p.kind == DeadlinePolicy::Kind::kFixed) return p.fixed;
  if (recent_durations_.size() < kMinDurationsForAdaptive) return p.ceiling;
  const absl::Duration median = Median(recent_durations_);
  std::vector<absl::Duration> deviations;
  for (absl::Duration d : recent_durations_) deviations.push_back(absl::AbsDuration(d - median));
  const absl::Duration budget = median + p.mad_multiplier * Median(deviations);
  return std::clamp(budget, p.floor, p.ceiling);
}

std::vector<MemberView> StepMachine::members() const {
  std::vector<MemberView> out;
  for (const auto& [id, m] : members_) {
    out.push_back({id, m.name, m.state == Member::State::kActive, m.last_seen, m.missed_in_a_row,
                   m.contributions_missed});
  }
  return out;
}

// Members holding the run's parameters, taken in turn.
std::vector<WorkerId> StepMachine::Holders(const std::vector<WorkerId>& excluded) const {
  std::vector<WorkerId> holders;
  for (const auto& [id, m] : members_) {
    if (m.state != Member::State::kSyncing && !Contains(excluded, id)) holders.push_back(id);
  }
  return holders;
}

std::optional<WorkerId> StepMachine::NextDonor(const std::vector<WorkerId>& excluded) {
  const std::vector<WorkerId> holders = Holders(excluded);
  if (holders.empty()) return std::nullopt;
  return holders[donor_turn_++ % holders.size()];
}

void StepMachine::AssignDonor(WorkerId joiner, absl::Time now, std::vector<Action>& out,
                              const std::vector<WorkerId>& excluded) {
  Member& m = members_.at(joiner);
  std::optional<WorkerId> donor = NextDonor(excluded);
  if (!donor.has_value()) {
    // Nobody holds the run's parameters: the joiner's own become the run's.
    m.state = Member::State::kReady;
    stale_offers_.clear();
    stale_wait_started_.reset();
    return;
  }
  m.state = Member::State::kSyncing;
  m.donor = *donor;
  m.transfer_moved = now;
  Action a = Make(Action::Kind::kRequestState, joiner, completed_steps_,
                  absl::StrCat("worker ", joiner, " receives the parameters from worker ", *donor));
  a.donor = *donor;
  out.push_back(std::move(a));
}

absl::StatusOr<StepMachine::Joined> StepMachine::Join(const std::string& name, absl::Time now,
                                                      int64_t resume_step) {
  const bool first_since_resume = resumed_ && next_id_ == 1 && !open_.has_value();
  // One step ahead: the seed applied a step whose save had not reached the disk. One step
  // behind: the save of a step reached the disk, its aggregate never reached the seed.
  const bool one_step_apart = resume_step == completed_steps_ + 1 ||
                              (resume_step > 0 && resume_step == completed_steps_ - 1);
  if (first_since_resume && !finished_ && one_step_apart) {
    completed_steps_ = resume_step;
    finished_ = completed_steps_ >= config_.total_steps;
  }
  if (finished_) return absl::OutOfRangeError("the run has finished");
  const bool seeds = Holders({}).empty();
  if (seeds) {
    absl::Status may_seed = MaySeed(name, resume_step, now);
    if (!may_seed.ok()) return may_seed;
  }
  if (static_cast<int>(members_.size()) >= config_.max_workers) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the run is full: ", config_.max_workers, " workers"));
  }
  for (const auto& [id, m] : members_) {
    if (m.name == name) {
      return absl::AlreadyExistsError(
          absl::StrCat("a worker named '", name, "' is already a member (id ", id, ")"));
    }
  }
  Joined joined;
  joined.id = next_id_++;
  Member& m = members_[joined.id];
  m.name = name;
  m.resume_step = resume_step;
  m.last_seen = now;
  AssignDonor(joined.id, now, joined.actions);
  if (!open_.has_value()) AtBoundary(now, joined.actions);
  return joined;
}

bool StepMachine::Current(int64_t resume_step) const {
  return completed_steps_ == 0 || (resume_step > 0 && resume_step >= completed_steps_);
}

absl::Status StepMachine::MaySeed(const std::string& name, int64_t resume_step, absl::Time now) {
  if (Current(resume_step)) return absl::OkStatus();
  const std::string run = absl::StrCat("the run has completed ", completed_steps_,
                                       " steps and no member holds its parameters");
  if (resume_step <= 0) {
    // Its untrained parameters would replace the run's.
    return absl::UnavailableError(absl::StrCat(
        run, ": a worker that holds them (one that sets its resume step) must join first"));
  }
  if (!stale_wait_started_.has_value()) stale_wait_started_ = now;
  stale_offers_[name] = {resume_step, now};
  const StaleOffer* best = nullptr;
  std::string best_name;
  for (auto it = stale_offers_.begin(); it != stale_offers_.end();) {
    if (now - it->second.asked > config_.heartbeat_timeout) {  // it stopped asking
      it = stale_offers_.erase(it);
      continue;
    }
    if (best == nullptr || it->second.resume_step > best->resume_step) {
      best = &it->second;
      best_name = it->first;
    }
    ++it;
  }
  const absl::Duration left = config_.stale_seed_grace - (now - *stale_wait_started_);
  if (left <= absl::ZeroDuration() && resume_step >= best->resume_step) return absl::OkStatus();
  std::string wait =
      left > absl::ZeroDuration()
          ? absl::StrCat("waiting ",
                         absl::FormatDuration(absl::Ceil(left, absl::Milliseconds(100))),
                         " more (stale_seed_grace_s) for a worker that holds them")
          : absl::StrCat("worker '", best_name, "', at step ", best->resume_step,
                         ", is more current and becomes the seed");
  return absl::UnavailableError(
      absl::StrCat(run, "; this worker's parameters are of step ", resume_step, ": ", wait));
}

void StepMachine::StateProgress(WorkerId joiner, absl::Time now) {
  auto it = members_.find(joiner);
  if (it != members_.end() && it->second.state == Member::State::kSyncing) {
    it->second.transfer_moved = now;
  }
}

void StepMachine::ReplaceStalledDonors(absl::Time now, std::vector<Action>& out) {
  std::vector<WorkerId> stalled;
  for (const auto& [id, m] : members_) {
    if (m.state != Member::State::kSyncing || now - m.transfer_moved <= config_.heartbeat_timeout) {
      continue;
    }
    // With nobody else to ask, the donor it has is still its best chance.
    if (!Holders({m.donor}).empty()) stalled.push_back(id);
  }
  for (WorkerId id : stalled) {
    const Member& m = members_.at(id);
    const WorkerId old_donor = m.donor;
    const absl::Duration idle = now - m.transfer_moved;
    AssignDonor(id, now, out, {old_donor});
    out.back().reason =
        absl::StrCat("worker ", id, "'s parameters from worker ", old_donor,
                     " made no progress for ", absl::FormatDuration(idle), ": ", out.back().reason);
  }
}

absl::StatusOr<std::vector<Action>> StepMachine::StateTransferred(WorkerId worker, absl::Time now) {
  auto it = members_.find(worker);
  if (it == members_.end()) return absl::NotFoundError(absl::StrCat("no worker ", worker));
  if (it->second.state != Member::State::kSyncing) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker, " was not waiting for parameters"));
  }
  it->second.state = Member::State::kReady;
  it->second.last_seen = now;
  std::vector<Action> out;
  if (!open_.has_value()) AtBoundary(now, out);
  return out;
}

absl::StatusOr<std::vector<Action>> StepMachine::Payload(WorkerId worker, int64_t step,
                                                         absl::Time now) {
  auto it = members_.find(worker);
  if (it == members_.end()) return absl::NotFoundError(absl::StrCat("no worker ", worker));
  it->second.last_seen = now;
  std::vector<Action> out;
  if (step <= completed_steps_ || (open_.has_value() && step < open_->step)) {
    it->second.missed_in_a_row = 0;  // late, not silent
    it->second.last_payload = now;
    out.push_back(
        Make(Action::Kind::kRejectLate, worker, step,
             absl::StrCat("step ", step, " closed before worker ", worker, "'s payload arrived")));
    return out;
  }
  if (!open_.has_value() || step != open_->step) {
    return absl::InvalidArgumentError(absl::StrCat(
        "payload for step ", step, " which has not opened (",
        open_.has_value() ? absl::StrCat("open: ", open_->step) : std::string("none open"), ")"));
  }
  if (!Contains(open_->expected, worker)) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker, " is not a contributor of step ", step));
  }
  if (Contains(open_->received, worker)) {
    return absl::AlreadyExistsError(
        absl::StrCat("worker ", worker, " already sent its payload for step ", step));
  }
  open_->received.push_back(worker);
  it->second.last_payload = now;
  MaybeCloseComplete(now, out);
  return out;
}

absl::StatusOr<std::vector<Action>> StepMachine::Heartbeat(WorkerId worker, absl::Time now) {
  auto it = members_.find(worker);
  if (it == members_.end()) return absl::NotFoundError(absl::StrCat("no worker ", worker));
  it->second.last_seen = now;
  return std::vector<Action>{};
}

absl::StatusOr<std::vector<Action>> StepMachine::Resync(WorkerId worker,
                                                        const std::vector<WorkerId>& suspects,
                                                        absl::Time now) {
  auto it = members_.find(worker);
  if (it == members_.end()) return absl::NotFoundError(absl::StrCat("no worker ", worker));
  if (it->second.state == Member::State::kSyncing) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker, " is already receiving the parameters"));
  }
  std::vector<WorkerId> excluded = suspects;
  excluded.push_back(worker);
  if (Holders(excluded).empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no member outside the suspects can give worker ", worker, " parameters"));
  }
  it->second.last_seen = now;
  std::vector<Action> out;
  // A payload already sent for the open step still counts; from the next boundary on the worker
  // waits for the parameters like a joiner.
  AssignDonor(worker, now, out, excluded);
  // Joiners being served by a suspect get their parameters from someone else.
  for (auto& [id, m] : members_) {
    if (id != worker && m.state == Member::State::kSyncing && Contains(excluded, m.donor)) {
      AssignDonor(id, now, out, excluded);
    }
  }
  return out;
}

void StepMachine::Remove(WorkerId worker, absl::Time now, std::vector<Action>& out) {
  members_.erase(worker);
  std::vector<WorkerId> orphans;
  for (const auto& [id, m] : members_) {
    if (m.state == Member::State::kSyncing && m.donor == worker) orphans.push_back(id);
  }
  // One that can seed the run goes first: the others then receive its parameters.
  std::stable_partition(orphans.begin(), orphans.end(),
                        [&](WorkerId id) { return Current(members_.at(id).resume_step); });
  for (WorkerId id : orphans) {
    const Member& m = members_.at(id);
    if (Holders({}).empty() && !Current(m.resume_step)) {
      // Its own parameters would roll the run back: it joins again, as a would-be seed.
      out.push_back(
          Make(Action::Kind::kEvict, id, completed_steps_,
               absl::StrCat("every member that could send it the parameters of step ",
                            completed_steps_, " left; its own are of step ", m.resume_step)));
      out.back().evict_cause = Action::EvictCause::kNoDonor;
      members_.erase(id);
      continue;
    }
    AssignDonor(id, now, out);
  }
  if (open_.has_value()) {
    Erase(open_->expected, worker);
    Erase(open_->received, worker);  // a payload from a member that left is not aggregated
  }
}

std::vector<Action> StepMachine::Leave(WorkerId worker, absl::Time now,
                                       const std::string& /*reason*/) {
  std::vector<Action> out;
  if (members_.count(worker) == 0) return out;
  Remove(worker, now, out);
  if (open_.has_value()) {
    MaybeCloseComplete(now, out);
  } else {
    AtBoundary(now, out);
  }
  return out;
}

std::vector<Action> StepMachine::Tick(absl::Time now) {
  std::vector<Action> out;
  if (finished_) return out;  // members still draining their last messages are not silent
  std::vector<WorkerId> silent;
  for (const auto& [id, m] : members_) {
    if (now - m.last_seen > config_.heartbeat_timeout) silent.push_back(id);
  }
  for (WorkerId id : silent) {
    // A silent joiner may be gone already, evicted with its silent donor (no_donor).
    if (members_.count(id) == 0) continue;
    out.push_back(Make(
        Action::Kind::kEvict, id, completed_steps_,
        absl::StrCat("no message for ", absl::FormatDuration(now - members_.at(id).last_seen))));
    out.back().evict_cause = Action::EvictCause::kSilent;
    Remove(id, now, out);
  }
  ReplaceStalledDonors(now, out);
  if (open_.has_value() && now >= open_->deadline) {
    CloseStep(now,
              absl::StrCat("deadline of ", absl::FormatDuration(open_->deadline - open_->opened),
                           " reached with ", open_->received.size(), " of ", open_->expected.size(),
                           " payloads"),
              out);
  } else if (open_.has_value()) {
    MaybeCloseComplete(now, out);
  } else {
    AtBoundary(now, out);
  }
  return out;
}

void StepMachine::MaybeCloseComplete(absl::Time now, std::vector<Action>& out) {
  if (!open_.has_value()) return;
  if (open_->expected.empty()) {
    // Every expected member left: nothing to aggregate; the step opens again later.
    open_.reset();
    AtBoundary(now, out);
    return;
  }
  if (open_->received.size() < open_->expected.size()) return;
  recent_durations_.push_back(now - open_->opened);
  if (static_cast<int>(recent_durations_.size()) > config_.deadline.window) {
    recent_durations_.erase(recent_durations_.begin());
  }
  CloseStep(now, absl::StrCat("all ", open_->expected.size(), " payloads arrived"), out);
}

void StepMachine::CloseStep(absl::Time now, const std::string& reason, std::vector<Action>& out) {
  OpenStep step = *std::move(open_);
  open_.reset();
  std::vector<WorkerId> contributors = step.received;
  std::sort(contributors.begin(), contributors.end());
  std::vector<Action> evictions;
  for (WorkerId id : step.expected) {
    Member& m = members_.at(id);
    if (Contains(contributors, id)) {
      m.missed_in_a_row = 0;
      continue;
    }
    ++m.missed_in_a_row;
    ++m.contributions_missed;
    // A member that is behind skips steps that closed without it and sends a payload now and
    // then; one that sends none for heartbeat_timeout is stuck, heartbeats or not.
    if (m.missed_in_a_row >= config_.max_missed_steps &&
        now - m.last_payload >= config_.heartbeat_timeout) {
      evictions.push_back(
          Make(Action::Kind::kEvict, id, step.step,
               absl::StrCat("missed ", m.missed_in_a_row, " steps in a row, no payload for ",
                            absl::FormatDuration(now - m.last_payload))));
    }
  }
  if (contributors.empty()) {
    // Nothing to aggregate: the same step opens again.
    for (Action& e : evictions) {
      out.push_back(e);
      Remove(e.worker, now, out);
    }
    AtBoundary(now, out);
    return;
  }
  Action close = Make(Action::Kind::kCloseStep, 0, step.step, reason);
  close.workers = contributors;
  out.push_back(std::move(close));
  completed_steps_ = step.step;
  for (Action& e : evictions) {
    out.push_back(e);
    Remove(e.worker, now, out);
  }
  if (completed_steps_ >= config_.total_steps) {
    finished_ = true;
    out.push_back(Make(Action::Kind::kFinish, 0, completed_steps_,
                       absl::StrCat("all ", config_.total_steps, " steps done")));
    return;
  }
  AtBoundary(now, out);
}

// No step is open: members that hold the parameters become active, then a step opens if
// enough are active.
void StepMachine::AtBoundary(absl::Time now, std::vector<Action>& out) {
  if (finished_ || open_.has_value()) return;
  const int64_t next = completed_steps_ + 1;
  for (auto& [id, m] : members_) {
    if (m.state != Member::State::kReady) continue;
    m.state = Member::State::kActive;
    m.last_payload = now;  // its silence counts from here
    out.push_back(Make(Action::Kind::kWelcome, id, next,
                       absl::StrCat("worker ", id, " contributes from step ", next)));
  }
  const int active = active_count();
  if (active < config_.min_workers) {
    if (!paused_) {
      paused_ = true;
      out.push_back(
          Make(Action::Kind::kPause, 0, next,
               absl::StrCat(active, " of ", config_.min_workers, " required workers active")));
    }
    return;
  }
  paused_ = false;
  OpenStep step{next, now, now + StepBudget(), {}, {}};
  for (const auto& [id, m] : members_) {
    if (m.state == Member::State::kActive) step.expected.push_back(id);
  }
  Action open =
      Make(Action::Kind::kOpenStep, 0, next,
           absl::StrCat(active, " workers, deadline ", absl::FormatDuration(step.deadline - now)));
  open.workers = step.expected;
  out.push_back(std::move(open));
  open_ = std::move(step);
}

}  // namespace demod
