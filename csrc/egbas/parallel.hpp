// Thread count and a blocking parallel-for over index ranges, run by a small persistent
// pool of std::threads. Work is cut into fixed chunks that threads take from an atomic
// counter, so a thread the OS delays does not hold up the others, and every result is
// independent of which thread ran which chunk (callers never depend on the thread count).
// Idle workers sleep on a condition variable (no spinning: on a shared machine a spinning
// worker takes the core from torch's threads); a forked child gets a fresh pool.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace egbas {

namespace detail {
inline std::atomic<int>& thread_setting() {
  static std::atomic<int> n{0};  // 0 = not set: use the hardware concurrency
  return n;
}
}  // namespace detail

// The default thread count: OMP_NUM_THREADS when it starts with a positive integer (as torch
// and numpy's BLAS read it), else the hardware concurrency. Read once.
inline int default_num_threads() {
  static const int n = [] {
    const char* env = std::getenv("OMP_NUM_THREADS");
    const long k = env ? std::strtol(env, nullptr, 10) : 0;
    if (k > 0) return static_cast<int>(std::min<long>(k, 1024));
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

// Number of threads the core uses (>= 1).
inline int get_num_threads() {
  int n = detail::thread_setting().load();
  return n > 0 ? n : default_num_threads();
}

// k >= 1 sets the count; k <= 0 restores the default (default_num_threads).
inline void set_num_threads(int k) { detail::thread_setting().store(k > 0 ? k : 0); }

namespace detail {

struct Job {
  std::function<void(int64_t, int64_t)> fn;
  int64_t n = 0, chunks = 0;
  int max_helpers = 0;
  std::atomic<int64_t> next{0}, done{0};
  std::atomic<int> helpers{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;

  // Takes chunks until none is left. A helper that wakes after the job ended finds
  // next >= chunks and never touches fn (whose captures may be gone by then).
  void work() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      try {
        fn(n * c / chunks, n * (c + 1) / chunks);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mutex);
        finished.notify_all();
      }
    }
  }
};

class Pool {
 public:
  // Never destroyed: workers may still be parked at exit. After fork() the child holds only
  // the forking thread, so the parent's pool (its workers, maybe a locked mutex) is useless
  // there: the child abandons it and starts a new one, which spawns its own workers.
  static Pool& instance() {
    static const bool registered = [] {
#if defined(__unix__) || defined(__APPLE__)
      pthread_atfork(nullptr, nullptr, [] { slot() = new Pool; });
#endif
      return true;
    }();
    (void)registered;
    return *slot();
  }

  // Runs job with up to `threads` threads (the caller included). Returns false, without
  // running anything, when another caller is using the pool; the caller then runs inline.
  bool run(const std::shared_ptr<Job>& job, int threads) {
    if (in_worker()) return false;  // nested call from inside a chunk: run inline
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (int(workers_.size()) < threads - 1) workers_.emplace_back([this] { loop(); });
      job->max_helpers = threads - 1;
      job_ = job;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    in_worker() = true;
    job->work();
    in_worker() = false;
    std::unique_lock<std::mutex> lock(job->mutex);
    job->finished.wait(lock, [&] { return job->done.load() == job->chunks; });
    return true;
  }

 private:
  static Pool*& slot() {
    static Pool* pool = new Pool;
    return pool;
  }
  static bool& in_worker() {
    static thread_local bool flag = false;
    return flag;
  }
  void loop() {
    in_worker() = true;
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        seen = generation_.load();
        job = job_;
      }
      if (job && job->helpers.fetch_add(1) < job->max_helpers) job->work();
    }
  }

  std::mutex busy_, mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::shared_ptr<Job> job_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace detail

// Calls fn(lo, hi) on disjoint chunks covering [0, n) and blocks until all are done;
// rethrows the first exception a chunk threw. Runs inline on one thread when
// total_work / min_work_per_thread < 2 (small jobs do not pay for waking threads).
// Chunk boundaries depend only on n and the thread count, never on timing.
template <class Fn>
void parallel_for(int64_t n, Fn&& fn, double total_work = 1e18, double min_work_per_thread = 2e5) {
  if (n <= 0) return;
  int64_t threads = std::min<int64_t>(get_num_threads(), n);
  threads = std::min<int64_t>(threads, std::max<int64_t>(1, static_cast<int64_t>(total_work / min_work_per_thread)));
  if (threads > 1) {
    auto job = std::make_shared<detail::Job>();
    job->fn = [&fn](int64_t lo, int64_t hi) { fn(lo, hi); };
    job->n = n;
    job->chunks = std::min<int64_t>(n, 4 * threads);
    if (detail::Pool::instance().run(job, static_cast<int>(threads))) {
      if (job->error) std::rethrow_exception(job->error);
      return;
    }
  }
  fn(int64_t{0}, n);
}

}  // namespace egbas
