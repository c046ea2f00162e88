// C++ tests of the header-only core, without Python: nearest against a float64 brute force
// (ties to the lowest index, duplicates, a point cloud far from the origin), sign packing and
// mismatch counts against plain loops, Philox4x32-10 against Random123's known answers, and
// the thread pool (every index once, exceptions, a forked child). Every instruction set the
// CPU has is tried. ctest runs it; CI also builds it with -fsanitize=address,undefined.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "egbas/egbas.hpp"

static int failures = 0;
#define CHECK(cond)                                                    \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

namespace {

// numpy's answer: argmin of the float64 squared distances, ties to the lowest index.
void brute_nearest(const std::vector<float>& P, const std::vector<float>& Q, int64_t d, std::vector<int64_t>* idx,
                   std::vector<double>* dist2) {
  const int64_t N = int64_t(P.size()) / d, B = int64_t(Q.size()) / d;
  idx->assign(size_t(B), -1), dist2->assign(size_t(B), INFINITY);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k) {
        const double diff = double(P[i * d + k]) - double(Q[b * d + k]);
        s += diff * diff;
      }
      if (s < (*dist2)[b]) (*dist2)[b] = s, (*idx)[b] = i;
    }
}

void check_nearest(const std::vector<float>& P, const std::vector<float>& Q, int64_t d) {
  const int64_t B = int64_t(Q.size()) / d;
  std::vector<int64_t> idx(static_cast<size_t>(B)), want;
  std::vector<float> dist2(static_cast<size_t>(B));
  std::vector<double> want_d;
  egbas::nearest(P.data(), int64_t(P.size()) / d, d, Q.data(), B, idx.data(), dist2.data());
  brute_nearest(P, Q, d, &want, &want_d);
  for (int64_t b = 0; b < B; ++b) {
    // The brute force sums in another order than numpy's pairwise sum: equal indices unless
    // two distances are within rounding, and then the distances agree to rounding.
    const bool same = idx[b] == want[b];
    CHECK(same || std::abs(dist2[b] - want_d[b]) <= 1e-5 * (1 + want_d[b]));
    CHECK(std::abs(double(dist2[b]) - want_d[b]) <= 1e-6 * (1 + want_d[b]));
  }
}

void test_nearest_random(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  for (int64_t d : {1, 3, 16, 33, 128})
    for (int64_t N : {1, 7, 100, 5000}) {
      const float offset = d == 33 ? 1000.f : 0.f;  // a cloud far from the origin is centred first
      std::vector<float> P(static_cast<size_t>(N * d)), Q(static_cast<size_t>(37 * d));
      for (auto& x : P) x = offset + normal(rng);
      for (auto& x : Q) x = offset + normal(rng);
      check_nearest(P, Q, d);
    }
}

void test_nearest_ties_go_to_the_lowest_index(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  const int64_t d = 24, N = 20000, B = 64;
  // 20k copies of one point: every query's answer is index 0, in bounded memory and time.
  std::vector<float> P(static_cast<size_t>(N * d)), Q(static_cast<size_t>(B * d)), one(static_cast<size_t>(d));
  for (auto& x : one) x = normal(rng);
  for (int64_t i = 0; i < N; ++i) std::copy(one.begin(), one.end(), P.begin() + i * d);
  for (auto& x : Q) x = normal(rng);
  std::vector<int64_t> idx(static_cast<size_t>(B));
  std::vector<float> dist2(static_cast<size_t>(B));
  egbas::nearest(P.data(), N, d, Q.data(), B, idx.data(), dist2.data());
  for (int64_t b = 0; b < B; ++b) CHECK(idx[b] == 0);
  // Copies scattered among distinct points: the first copy wins, and every answer is exact.
  for (int64_t i = 0; i < N; ++i)
    if (i % 3)
      for (int64_t k = 0; k < d; ++k) P[i * d + k] = normal(rng);
  std::copy(P.begin() + 5 * d, P.begin() + 6 * d, Q.begin());  // query 0 sits on point 5's value
  for (int64_t i : {4000, 9001, 19999}) std::copy(P.begin() + 5 * d, P.begin() + 6 * d, P.begin() + i * d);
  egbas::nearest(P.data(), N, d, Q.data(), B, idx.data(), dist2.data());
  CHECK(idx[0] == 5 && dist2[0] == 0.f);
  check_nearest(P, Q, d);
  // A Tree keeps copies (it does not drop them): more tied candidates than a query keeps,
  // compacted by exact re-checks; and distinct points all at distance 1 (+-e_i).
  egbas::Tree tree(d);
  std::vector<int64_t> parents(static_cast<size_t>(N), -1), added(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) std::copy(one.begin(), one.end(), P.begin() + i * d);
  tree.add(P.data(), parents.data(), N, added.data());
  tree.nearest(Q.data(), B, idx.data(), dist2.data());
  for (int64_t b = 0; b < B; ++b) CHECK(idx[b] == 0);
  std::vector<float> axes(static_cast<size_t>(2 * d * d), 0.f), origin(static_cast<size_t>(d), 0.f);
  for (int64_t i = 0; i < d; ++i) axes[size_t(i * d + i)] = -1.f, axes[size_t((d + i) * d + i)] = 1.f;
  egbas::nearest(axes.data(), 2 * d, d, origin.data(), 1, idx.data(), dist2.data());
  CHECK(idx[0] == 0 && dist2[0] == 1.f);
}

void test_nearest_rejects_bad_input() {
  std::vector<float> P = {0.f, NAN}, Q = {0.f, 0.f};
  int64_t idx;
  float dist2;
  bool threw = false;
  try {
    egbas::nearest(P.data(), 1, 2, Q.data(), 1, &idx, &dist2);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
}

void test_bits(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  for (int64_t n : {1, 63, 64, 65, 200}) {
    const int64_t B = 50, W = egbas::words_for(n);
    std::vector<float> v(static_cast<size_t>(B * n));
    for (auto& x : v) x = normal(rng);
    v[0] = 0.f;  // exactly at the threshold: not set
    std::vector<uint64_t> bits(static_cast<size_t>(B * W)), mask(static_cast<size_t>(W));
    CHECK(egbas::pack_signs(v.data(), B, n, 0.f, bits.data()));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < 64 * W; ++i) {
        const bool bit = (bits[b * W + i / 64] >> (i % 64)) & 1;
        CHECK(bit == (i < n && v[b * n + i] > 0.f));
      }
    for (auto& m : mask) m = (uint64_t(rng()) << 32) ^ rng();
    std::vector<int32_t> count(static_cast<size_t>(B));
    egbas::mismatch_count(bits.data(), B, W, bits.data(), mask.data(), count.data());
    int32_t want = 0;
    for (int64_t w = 0; w < W; ++w) want += __builtin_popcountll((bits[1 * W + w] ^ bits[w]) & mask[w]);
    CHECK(count[0] == 0);
    egbas::mismatch_count(bits.data() + W, 1, W, bits.data(), mask.data(), count.data());
    CHECK(count[0] == want);
    v[size_t(B * n - 1)] = NAN;
    CHECK(!egbas::pack_signs(v.data(), B, n, 0.f, bits.data()));
  }
}

// Random123's tests/kat_vectors, the three "philox4x32 10" lines (DEShawResearch/random123,
// commit 9545ff6): counter (4 words), key (2 words), expected output (4 words).
void test_philox_known_answers() {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    // the core's counter is (draw lo, draw hi, coordinate, tag) and its key the seed
    const egbas::detail::Philox4x32 r(uint64_t(k.key[0]) | uint64_t(k.key[1]) << 32,
                                      uint64_t(k.ctr[0]) | uint64_t(k.ctr[1]) << 32, k.ctr[2], k.ctr[3]);
    for (int i = 0; i < 4; ++i) CHECK(r.v[i] == k.out[i]);
  }
}

int threads_used(int64_t chunks) {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  egbas::parallel_for(chunks, [&](int64_t lo, int64_t hi) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20 * (hi - lo)));
    std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  return int(seen.size());
}

void test_pool() {
  for (int threads : {1, 2, 3, 8}) {
    egbas::set_num_threads(threads);
    for (int64_t n : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      egbas::parallel_for(n, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) hits[size_t(i)]++;
      });
      for (auto& h : hits) CHECK(h.load() == 1);
    }
    bool threw = false;
    try {
      egbas::parallel_for(100, [](int64_t lo, int64_t) {
        if (lo > 0) throw std::runtime_error("chunk");
      });
    } catch (const std::runtime_error&) {
      threw = true;
    }
    CHECK(threw || threads == 1);  // one thread runs the single chunk [0, 100), which does not throw
  }
  egbas::set_num_threads(2);
  CHECK(threads_used(8) == 2);
  // A forked child gets a pool of its own, with working threads (not the parent's dead ones).
  const pid_t pid = fork();
  if (pid == 0) _exit(threads_used(8) == 2 ? 0 : 1);
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  egbas::set_num_threads(0);
}


// PiecewiseHMC on a random region {z : L relu_0.1(A z + c) + e > 0} built around a start inside: every end is
// inside (values recomputed here from the definition), trajectories hit walls, |end| stays within the energy
// bound, and the ends are the same bits on every instruction set and thread count.
void test_piecewise_hmc(std::mt19937& rng) {
  const int64_t m = 30, d = 5, k = 10, C = 8;
  const double slope = 0.1;
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<double> A(m * d), c(m), L(k * m), e(k), w0(m), z0(d), V(C * d), h(m);
  for (auto& x : A) x = normal(rng);
  for (auto& x : c) x = 0.5 * normal(rng);
  for (auto& x : L) x = uniform(rng) < 0.5 ? normal(rng) : 0.0;
  for (auto& x : z0) x = 0.5 * normal(rng);
  for (auto& x : V) x = normal(rng);
  const auto values = [&](const double* z, double* out) {  // L act(A z + c) + e, from the definition
    for (int64_t j = 0; j < m; ++j) {
      double p = c[j];
      for (int64_t t = 0; t < d; ++t) p += A[j * d + t] * z[t];
      h[j] = p > 0 ? p : slope * p;
    }
    for (int64_t i = 0; i < k; ++i) {
      double s = e[i];
      for (int64_t j = 0; j < m; ++j) s += L[i * m + j] * h[j];
      out[i] = s;
    }
  };
  std::vector<double> v0(k);
  values(z0.data(), v0.data());  // with e = 0
  for (int64_t i = 0; i < k; ++i) e[i] = 0.05 - v0[i];  // every selected value 0.05 at the start: walls all around
  for (int64_t j = 0; j < m; ++j) {
    double p = c[j];
    for (int64_t t = 0; t < d; ++t) p += A[j * d + t] * z0[t];
    w0[j] = p > 0 ? 1.0 : slope;
  }
  const int64_t record = 8;
  std::vector<double> paths(C * record * d);
  const auto run = [&](std::vector<double>* Z, std::vector<int64_t>* bounces) {
    egbas::PiecewiseHMC hmc(A.data(), c.data(), slope, L.data(), e.data(), w0.data(), m, d, k);
    std::vector<egbas::PiecewiseHMC::Piece> pieces;
    std::vector<double> Vc = V;
    Z->resize(C * d);
    bounces->resize(C);
    for (int64_t r = 0; r < C; ++r) std::copy(z0.begin(), z0.end(), Z->begin() + r * d);
    hmc.trajectories(pieces, Z->data(), Vc.data(), C, 1.5707963267948966, 2000, bounces->data(), record,
                     paths.data());
  };
  std::vector<double> Z, Z1;
  std::vector<int64_t> bounces, bounces1;
  run(&Z, &bounces);
  std::vector<double> out(k);
  for (int64_t r = 0; r < C; ++r) {
    CHECK(bounces[r] > 0);
    values(Z.data() + r * d, out.data());
    for (int64_t i = 0; i < k; ++i) CHECK(out[i] > -1e-9);
    for (int64_t p = 0; p < record; ++p) {  // every recorded position inside; the last one is the end
      values(paths.data() + (r * record + p) * d, out.data());
      for (int64_t i = 0; i < k; ++i) CHECK(out[i] > -1e-9);
    }
    CHECK(std::equal(Z.begin() + r * d, Z.begin() + (r + 1) * d, paths.begin() + (r * record + record - 1) * d));
    double energy = 0, radius = 0;
    for (int64_t t = 0; t < d; ++t) energy += z0[t] * z0[t] + V[r * d + t] * V[r * d + t], radius += Z[r * d + t] * Z[r * d + t];
    CHECK(radius <= energy + 1e-9);
  }
  const egbas::Isa best = egbas::active_isa();
  egbas::limit_isa(egbas::Isa::scalar);
  egbas::set_num_threads(1);
  run(&Z1, &bounces1);
  CHECK(Z1 == Z && bounces1 == bounces);
  egbas::set_num_threads(2);
  run(&Z1, &bounces1);
  CHECK(Z1 == Z && bounces1 == bounces);
  egbas::set_num_threads(0);
  egbas::limit_isa(best);
}

}  // namespace

int main() {
  std::mt19937 rng(12345);
  const egbas::Isa best = egbas::active_isa();
  for (egbas::Isa isa : {egbas::Isa::scalar, egbas::Isa::avx2, egbas::Isa::avx512}) {
    egbas::limit_isa(isa);
    if (egbas::active_isa() != isa) continue;  // the CPU lacks it
    std::printf("isa %s\n", egbas::isa_name(isa));
    test_nearest_random(rng);
    test_nearest_ties_go_to_the_lowest_index(rng);
    test_bits(rng);
    egbas::limit_isa(best);
  }
  test_nearest_rejects_bad_input();
  test_philox_known_answers();
  test_pool();
  test_piecewise_hmc(rng);
  std::printf("%s: %d failed checks\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}
