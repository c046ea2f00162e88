// Thread count and a blocking parallel-for over index ranges (std::thread, no pool).
// Every caller splits work so that the result does not depend on the thread count.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace egbas {

namespace detail {
inline std::atomic<int>& thread_setting() {
  static std::atomic<int> n{0};  // 0 = not set: use the hardware concurrency
  return n;
}
}  // namespace detail

// Number of worker threads the core uses (>= 1).
inline int get_num_threads() {
  int n = detail::thread_setting().load();
  if (n > 0) return n;
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

// k >= 1 sets the count; k <= 0 restores the default (hardware concurrency).
inline void set_num_threads(int k) { detail::thread_setting().store(k > 0 ? k : 0); }

// Calls fn(lo, hi) on disjoint chunks covering [0, n). Runs inline when there is
// little work (total_work < min_work_per_thread) or one thread. Blocks until done;
// rethrows the first exception a chunk threw.
template <class Fn>
void parallel_for(int64_t n, Fn&& fn, double total_work = 1e18, double min_work_per_thread = 2e5) {
  if (n <= 0) return;
  int64_t threads = std::min<int64_t>(get_num_threads(), n);
  threads = std::min<int64_t>(threads, std::max<int64_t>(1, static_cast<int64_t>(total_work / min_work_per_thread)));
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(threads);
  pool.reserve(threads - 1);
  auto chunk = [&](int64_t t) {
    int64_t lo = n * t / threads, hi = n * (t + 1) / threads;
    try {
      if (lo < hi) fn(lo, hi);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(chunk, t);
  chunk(0);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace egbas
