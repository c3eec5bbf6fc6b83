// Makes Debian's absl::Mutex visible to ThreadSanitizer, preloaded
// (LD_PRELOAD) into the concurrency tests of the TSan pass.
//
// Debian ships abseil uninstrumented, so its Mutex's own TSan annotations
// compiled to nothing: TSan sees neither lock nor unlock, and reports every
// pair of accesses to data an absl::Mutex guards as a race (WorkerRegistry,
// BlockAllocator, ...). This library interposes the Mutex and CondVar entry
// points, calls the real ones (dlsym RTLD_NEXT) and tells TSan what they
// did with the __tsan_mutex_* annotations, as abseil does when built with
// TSan. Waits release the mutex in the real implementation, so they are
// annotated as an unlock before and a lock after.
//
// Built without -fsanitize (it is part of the sanitizer's plumbing, not
// code under test); the annotation functions are weak so a process without
// the TSan runtime (ctest, node, shells that inherit LD_PRELOAD) runs as if
// this library were not there.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"

extern "C" {
void __tsan_mutex_pre_lock(void* addr, unsigned flags) __attribute__((weak));
void __tsan_mutex_post_lock(void* addr, unsigned flags, int recursion) __attribute__((weak));
int __tsan_mutex_pre_unlock(void* addr, unsigned flags) __attribute__((weak));
void __tsan_mutex_post_unlock(void* addr, unsigned flags) __attribute__((weak));
}

namespace {

// sanitizer/tsan_interface.h's flag values.
constexpr unsigned kReadLock = 1 << 3;
constexpr unsigned kTryLock = 1 << 4;
constexpr unsigned kTryLockFailed = 1 << 5;

template <typename Fn>
Fn Real(const char* symbol) {
  void* f = dlsym(RTLD_NEXT, symbol);
  if (f == nullptr) {
    std::fprintf(stderr, "absl_mutex_tsan: %s not found: %s\n", symbol, dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(f);
}

// abseil's entry points call one another (WaitWithTimeout calls
// WaitWithDeadline through the PLT, so through this library again): only
// the outermost call on a thread is annotated.
thread_local int depth = 0;

bool Annotating() { return __tsan_mutex_pre_lock != nullptr && depth == 1; }

struct Nest {
  Nest() { ++depth; }
  ~Nest() { --depth; }
};

void PreLock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_pre_lock(mu, flags);
}
void PostLock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_post_lock(mu, flags, 0);
}
void PreUnlock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_pre_unlock(mu, flags);
}
void PostUnlock(void* mu, unsigned flags) {
  if (Annotating()) __tsan_mutex_post_unlock(mu, flags);
}

// The wait released the mutex and took it back inside abseil.
void AnnotateWaitStart(void* mu) {
  PreUnlock(mu, 0);
  PostUnlock(mu, 0);
}
void AnnotateWaitEnd(void* mu) {
  PreLock(mu, 0);
  PostLock(mu, 0);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static auto real = Real<void (*)(Mutex*)>("_ZN4absl7debian35Mutex4LockEv");
  Nest nest;
  PreLock(this, 0);
  real(this);
  PostLock(this, 0);
}

void Mutex::Unlock() {
  static auto real = Real<void (*)(Mutex*)>("_ZN4absl7debian35Mutex6UnlockEv");
  Nest nest;
  PreUnlock(this, 0);
  real(this);
  PostUnlock(this, 0);
}

bool Mutex::TryLock() {
  static auto real = Real<bool (*)(Mutex*)>("_ZN4absl7debian35Mutex7TryLockEv");
  Nest nest;
  PreLock(this, kTryLock);
  const bool locked = real(this);
  PostLock(this, kTryLock | (locked ? 0 : kTryLockFailed));
  return locked;
}

void Mutex::ReaderLock() {
  static auto real = Real<void (*)(Mutex*)>("_ZN4absl7debian35Mutex10ReaderLockEv");
  Nest nest;
  PreLock(this, kReadLock);
  real(this);
  PostLock(this, kReadLock);
}

void Mutex::ReaderUnlock() {
  static auto real = Real<void (*)(Mutex*)>("_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Nest nest;
  PreUnlock(this, kReadLock);
  real(this);
  PostUnlock(this, kReadLock);
}

bool Mutex::ReaderTryLock() {
  static auto real = Real<bool (*)(Mutex*)>("_ZN4absl7debian35Mutex13ReaderTryLockEv");
  Nest nest;
  PreLock(this, kReadLock | kTryLock);
  const bool locked = real(this);
  PostLock(this, kReadLock | kTryLock | (locked ? 0 : kTryLockFailed));
  return locked;
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>("_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  Nest nest;
  PreLock(this, 0);
  real(this, cond);
  PostLock(this, 0);
}

void Mutex::Await(const Condition& cond) {
  static auto real = Real<void (*)(Mutex*, const Condition&)>("_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Nest nest;
  AnnotateWaitStart(this);
  real(this, cond);
  AnnotateWaitEnd(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Nest nest;
  AnnotateWaitStart(this);
  const bool met = real(this, cond, timeout);
  AnnotateWaitEnd(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Nest nest;
  AnnotateWaitStart(this);
  const bool met = real(this, cond, deadline);
  AnnotateWaitEnd(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  static auto real = Real<void (*)(CondVar*, Mutex*)>("_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Nest nest;
  AnnotateWaitStart(mu);
  real(this, mu);
  AnnotateWaitEnd(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Nest nest;
  AnnotateWaitStart(mu);
  const bool timed_out = real(this, mu, timeout);
  AnnotateWaitEnd(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto real = Real<bool (*)(CondVar*, Mutex*, absl::Time)>(
      "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Nest nest;
  AnnotateWaitStart(mu);
  const bool timed_out = real(this, mu, deadline);
  AnnotateWaitEnd(mu);
  return timed_out;
}

ABSL_NAMESPACE_END
}  // namespace absl
