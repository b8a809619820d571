// Makes Debian's Abseil locks visible to ThreadSanitizer. TSan sees only code compiled with it,
// and Debian's libabsl_synchronization is not: an absl::Mutex is taken and released where TSan
// cannot see, so every access it guards would be reported as a race (a two-thread counter
// under absl::MutexLock is). Linked only into the tests of a TSan build (DEMOD_TSAN, see
// scripts/sanitize.sh), this file interposes the exported entry points of absl::Mutex and
// absl::CondVar: each calls Abseil's own definition, found with dlsym(RTLD_NEXT), and tells TSan
// the happens-before edge it makes (acquire once the lock is held, release before it is given
// up). gRPC's locks are absl::Mutex too (gpr_mu), so they become visible the same way; the
// test programs export these definitions (-rdynamic) so that gRPC's calls reach them.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/synchronization/mutex.h"

#define DEMOD_STRINGIFY_INNER(x) #x
#define DEMOD_STRINGIFY(x) DEMOD_STRINGIFY_INNER(x)

namespace {

// Abseil's own definition of the member `member` (its mangled name after the namespace):
// prefix "_ZN" for members, "_ZNK" for const ones.
template <typename Function>
Function Original(const char* prefix, const char* member) {
  const std::string inline_namespace = DEMOD_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string symbol = std::string(prefix) + "4absl" +
                             std::to_string(inline_namespace.size()) + inline_namespace + member;
  void* original = dlsym(RTLD_NEXT, symbol.c_str());
  if (original == nullptr) {
    std::fprintf(stderr, "tsan_abseil_sync: %s not found: %s\n", symbol.c_str(), dlerror());
    std::abort();
  }
  return reinterpret_cast<Function>(original);
}

// A condition as the interposed calls hand it to Abseil: Abseil evaluates it holding the lock
// it took internally (on the waiting thread, or on one that is unlocking), where no annotation
// of ours runs; so the evaluation itself acquires and releases.
struct Evaluated {
  const absl::Condition* condition;
  absl::Mutex* mu;
  static bool Eval(Evaluated* e) {
    __tsan_acquire(e->mu);
    const bool holds = e->condition->Eval();
    __tsan_release(e->mu);
    return holds;
  }
};

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto original = Original<void (*)(Mutex*)>("_ZN", "5Mutex4LockEv");
  original(this);
  __tsan_acquire(this);
}

void Mutex::ReaderLock() {
  static const auto original = Original<void (*)(Mutex*)>("_ZN", "5Mutex10ReaderLockEv");
  original(this);
  __tsan_acquire(this);
}

void Mutex::Unlock() {
  static const auto original = Original<void (*)(Mutex*)>("_ZN", "5Mutex6UnlockEv");
  __tsan_release(this);
  original(this);
}

void Mutex::ReaderUnlock() {
  static const auto original = Original<void (*)(Mutex*)>("_ZN", "5Mutex12ReaderUnlockEv");
  __tsan_release(this);
  original(this);
}

bool Mutex::TryLock() {
  static const auto original = Original<bool (*)(Mutex*)>("_ZN", "5Mutex7TryLockEv");
  const bool locked = original(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const auto original = Original<bool (*)(Mutex*)>("_ZN", "5Mutex13ReaderTryLockEv");
  const bool locked = original(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

// The *When forms return holding the lock, whatever they return.
void Mutex::LockWhen(const Condition& cond) {
  static const auto original =
      Original<void (*)(Mutex*, const Condition&)>("_ZN", "5Mutex8LockWhenERKNS0_9ConditionE");
  Evaluated evaluated{&cond, this};
  original(this, absl::Condition(&Evaluated::Eval, &evaluated));
  __tsan_acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static const auto original = Original<void (*)(Mutex*, const Condition&)>(
      "_ZN", "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Evaluated evaluated{&cond, this};
  original(this, absl::Condition(&Evaluated::Eval, &evaluated));
  __tsan_acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto original = Original<bool (*)(Mutex*, const Condition&, Duration)>(
      "_ZN", "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Evaluated evaluated{&cond, this};
  const bool met = original(this, absl::Condition(&Evaluated::Eval, &evaluated), timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto original = Original<bool (*)(Mutex*, const Condition&, Time)>(
      "_ZN", "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Evaluated evaluated{&cond, this};
  const bool met = original(this, absl::Condition(&Evaluated::Eval, &evaluated), deadline);
  __tsan_acquire(this);
  return met;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto original = Original<bool (*)(Mutex*, const Condition&, Duration)>(
      "_ZN", "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Evaluated evaluated{&cond, this};
  const bool met = original(this, absl::Condition(&Evaluated::Eval, &evaluated), timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto original = Original<bool (*)(Mutex*, const Condition&, Time)>(
      "_ZN", "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Evaluated evaluated{&cond, this};
  const bool met = original(this, absl::Condition(&Evaluated::Eval, &evaluated), deadline);
  __tsan_acquire(this);
  return met;
}

// Await gives the lock up while it waits and holds it again on return.
void Mutex::Await(const Condition& cond) {
  static const auto original =
      Original<void (*)(Mutex*, const Condition&)>("_ZN", "5Mutex5AwaitERKNS0_9ConditionE");
  __tsan_release(this);
  Evaluated evaluated{&cond, this};
  original(this, absl::Condition(&Evaluated::Eval, &evaluated));
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static const auto original = Original<bool (*)(Mutex*, const Condition&, Duration)>(
      "_ZN", "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  __tsan_release(this);
  Evaluated evaluated{&cond, this};
  const bool met = original(this, absl::Condition(&Evaluated::Eval, &evaluated), timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static const auto original = Original<bool (*)(Mutex*, const Condition&, Time)>(
      "_ZN", "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  __tsan_release(this);
  Evaluated evaluated{&cond, this};
  const bool met = original(this, absl::Condition(&Evaluated::Eval, &evaluated), deadline);
  __tsan_acquire(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  static const auto original =
      Original<void (*)(CondVar*, Mutex*)>("_ZN", "7CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  original(this, mu);
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static const auto original = Original<bool (*)(CondVar*, Mutex*, Duration)>(
      "_ZN", "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  const bool timed_out = original(this, mu, timeout);
  __tsan_acquire(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static const auto original = Original<bool (*)(CondVar*, Mutex*, Time)>(
      "_ZN", "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  const bool timed_out = original(this, mu, deadline);
  __tsan_acquire(mu);
  return timed_out;
}

ABSL_NAMESPACE_END
}  // namespace absl
