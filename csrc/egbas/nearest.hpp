// Exact nearest neighbour (L2) for a batch of queries: the same index as numpy's argmin of
// ((P64 - q64)**2).sum(1), ties to the lowest index, and that float64 distance as float32.
//
// Method. Points and queries are centred on a reference point c, then a blocked float32
// kernel computes t(p) = |p'|^2 - 2<p', q'> (the query norm is constant per query) with a
// fused running filter. Every rounding error (centring, the float32 dot product in any
// summation order, the norms, the filter arithmetic, the float64 oracle itself) is bounded
// by G * (|p'|^2 + |q'|^2) with G = 1.25 (d + 32) 2^-24, so with
//   lo(p) = t(p) - G |p'|^2,  hi(p) = t(p) + G |p'|^2,  H = min_p hi(p),
// the true argmin always satisfies lo(p) <= H + 2 G |q'|^2. All such candidates are then
// re-checked exactly: float64 differences summed in numpy's pairwise order. Centring keeps
// the bound proportional to the spread of the cloud, not to its distance from the origin.
//
// Why no BLAS: on the 2-core AVX-512 EPYC this was built on, the fused kernel below (one
// pass, no distance matrix) ran 256 x 20k x 128 in 12 ms on one thread while OpenBLAS's
// sgemm alone (numpy Q @ P.T) took 26 ms; a BLAS-based nearest needs that product plus an
// argmin pass, so linking scipy-openblas32 could only be slower here.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.hpp"
#include "simd.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#define EGBAS_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define EGBAS_NO_FP_CONTRACT
#endif

namespace egbas {
namespace detail {

struct Candidate {
  float lo;
  int64_t idx;
};

struct ScanArgs {
  const float* points;  // centred rows, stride ld
  int64_t ld, d;
  const float* lo_off;   // (N,) |p'|^2 (1 - G)
  const float* hi_off;   // (N,) |p'|^2 (1 + G)
  const float* qpanel;   // [blocks][d][QB] centred queries, zero padded
  const float* thr_off;  // [blocks * QB] 2 G |q'|^2 + underflow slack; -inf for padding
  const float* P;        // original rows, stride ldp, and original queries (rows of d): for
  int64_t ldp;           // the exact re-check of an overfull candidate list (compact_candidates)
  const float* Q;
};

// numpy's float64 add.reduce order (pairwise, 8 accumulators, blocks of 128).
inline double pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double r = 0.;
    for (int64_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// ((double(p) - double(q))**2).sum() exactly as numpy computes it. No FMA contraction:
// the squares are rounded before they are summed, as in numpy. buf: d doubles of scratch.
EGBAS_NO_FP_CONTRACT inline double numpy_sq_dist(const float* p, const float* q, int64_t d, double* buf) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  for (int64_t j = 0; j < d; ++j) {
    const double diff = double(p[j]) - double(q[j]);
    buf[j] = diff * diff;
  }
  return pairwise_sum(buf, d);
}

// A query's candidate list is compacted when it grows past this: many points at exactly the
// same distance (distinct points equidistant from a query, or copies of one point in a Tree)
// would otherwise keep every one of them, N entries per query.
constexpr size_t kMaxCandidates = 256;

// Compacts the candidates of query q (thr: its current threshold): drops those the filter has
// since excluded, and if that is not enough re-checks the rest exactly and keeps only the best
// (lowest index on ties) with lo = -inf, so it survives to the final re-check. Exactness holds:
// the final answer is the exact minimum over a set that still contains the true argmin.
EGBAS_NO_FP_CONTRACT inline void compact_candidates(const ScanArgs& a, int64_t q, float thr,
                                                    std::vector<Candidate>* cands) {
  cands->erase(std::remove_if(cands->begin(), cands->end(), [thr](const Candidate& c) { return !(c.lo <= thr); }),
               cands->end());
  if (cands->size() <= kMaxCandidates / 2) return;
  std::vector<double> buf(static_cast<size_t>(a.d));
  double best = std::numeric_limits<double>::infinity();
  int64_t best_idx = -1;
  for (const Candidate& c : *cands) {
    const double dist = numpy_sq_dist(a.P + c.idx * a.ldp, a.Q + q * a.d, a.d, buf.data());
    if (dist < best || (dist == best && c.idx < best_idx)) best = dist, best_idx = c.idx;
  }
  cands->assign(1, Candidate{-std::numeric_limits<float>::infinity(), best_idx});
}

// Squared norms above this are rejected: the float32 filter needs them to stay finite.
constexpr double kMaxSquaredNorm = 1e30;

inline double filter_error_factor(int64_t d) { return 1.25 * double(d + 32) * 0x1p-24; }

}  // namespace detail
}  // namespace egbas

namespace egbas::detail::scalar_nn {
struct Ops {
  static constexpr int W = 1;
  using vec = float;
  static vec zero() { return 0.f; }
  static vec load(const float* p) { return *p; }
  static vec set1(float x) { return x; }
  static vec fmadd(vec a, vec b, vec c) { return a * b + c; }
  static vec min(vec a, vec b) { return b < a ? b : a; }
  static vec add(vec a, vec b) { return a + b; }
  static void store(float* p, vec a) { *p = a; }
  static unsigned le_mask(vec a, vec b) { return a <= b; }
};
constexpr int NP = 4;
#include "nearest_kernel.inc"
}  // namespace egbas::detail::scalar_nn

#if EGBAS_X86
EGBAS_TARGET_BEGIN("avx2,fma")
namespace egbas::detail::avx2_nn {
struct Ops {
  static constexpr int W = 8;
  using vec = __m256;
  static vec zero() { return _mm256_setzero_ps(); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec set1(float x) { return _mm256_set1_ps(x); }
  static vec fmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec min(vec a, vec b) { return _mm256_min_ps(a, b); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static void store(float* p, vec a) { _mm256_storeu_ps(p, a); }
  static unsigned le_mask(vec a, vec b) { return unsigned(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LE_OQ))); }
};
constexpr int NP = 6;
#include "nearest_kernel.inc"
}  // namespace egbas::detail::avx2_nn
EGBAS_TARGET_END
EGBAS_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
namespace egbas::detail::avx512_nn {
struct Ops {
  static constexpr int W = 16;
  using vec = __m512;
  static vec zero() { return _mm512_setzero_ps(); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec set1(float x) { return _mm512_set1_ps(x); }
  static vec fmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  // maskz form: same result, avoids GCC 12 false -Wuninitialized on _mm512_undefined_ps
  static vec min(vec a, vec b) { return _mm512_maskz_min_ps(__mmask16(0xFFFF), a, b); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static void store(float* p, vec a) { _mm512_storeu_ps(p, a); }
  static unsigned le_mask(vec a, vec b) { return unsigned(_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ)); }
};
constexpr int NP = 12;
#include "nearest_kernel.inc"
}  // namespace egbas::detail::avx512_nn
EGBAS_TARGET_END
#endif  // EGBAS_X86

namespace egbas {
namespace detail {

using ScanFn = void (*)(const ScanArgs&, int64_t, int64_t, int64_t, int64_t, float*, std::vector<Candidate>*);

inline void select_kernel(ScanFn* fn, int* qb) {
#if EGBAS_X86
  switch (active_isa()) {
    case Isa::avx512: *fn = &avx512_nn::scan, *qb = avx512_nn::QB; return;
    case Isa::avx2: *fn = &avx2_nn::scan, *qb = avx2_nn::QB; return;
    default: break;
  }
#endif
  *fn = &scalar_nn::scan, *qb = scalar_nn::QB;
}

// One slab of queries (see nearest_centred); row_base numbers rows in error messages.
inline void nearest_slab(const float* Pc, int64_t ld, const float* pnorm, const float* P, int64_t ldp, int64_t N,
                         int64_t d, const float* centre, const float* Q, int64_t B, int64_t* out_idx,
                         float* out_dist2, int64_t row_base) {
  if (B == 0) return;
  ScanFn scan;
  int QB;
  select_kernel(&scan, &QB);
  const double G = filter_error_factor(d);
  const double slack = double(d + 32) * 0x1p-126;  // absolute error of subnormal products

  // Centred queries, packed [block][k][lane]; padding lanes never become candidates.
  const int64_t blocks = (B + QB - 1) / QB;
  std::vector<float> qpanel(size_t(blocks * d * QB), 0.f);
  std::vector<float> thr_off(size_t(blocks * QB), -std::numeric_limits<float>::infinity());
  parallel_for(B, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      double n2 = 0;
      float* dst = qpanel.data() + (b / QB) * d * QB + b % QB;
      for (int64_t k = 0; k < d; ++k) {
        const float x = centre ? float(double(Q[b * d + k]) - double(centre[k])) : Q[b * d + k];
        dst[k * QB] = x;
        n2 += double(x) * x;
      }
      if (!std::isfinite(n2))
        throw std::invalid_argument("queries must be finite (row " + std::to_string(row_base + b) + ")");
      if (n2 > kMaxSquaredNorm)
        throw std::invalid_argument("queries are too far from the points (row " + std::to_string(row_base + b) + ")");
      thr_off[b] = float(2 * G * n2 + slack);
    }
  }, double(B) * d, 1e5);

  std::vector<float> lo_off(N), hi_off(N);
  for (int64_t i = 0; i < N; ++i) {
    lo_off[i] = float(pnorm[i] * (1 - G));
    hi_off[i] = float(pnorm[i] * (1 + G));
  }
  const ScanArgs args{Pc, ld, d, lo_off.data(), hi_off.data(), qpanel.data(), thr_off.data(), P, ldp, Q};

  // Work split: over points when there are many (each part has its own filter state and
  // candidates, merged below), otherwise over query blocks. The answer is exact, so the
  // split never changes it.
  const double work = double(N) * double(d) * double(blocks * QB);
  constexpr double kWorkPerThread = 2e7;  // multiply-adds that pay for waking a thread
  const int64_t threads = std::min<int64_t>(get_num_threads(), std::max<int64_t>(1, int64_t(work / kWorkPerThread)));
  const int64_t point_parts =
      threads > 1 && (N >= 4096 * threads || blocks < 2 * threads) ? std::min<int64_t>(N, 4 * threads) : 1;
  const int64_t rows = blocks * QB;
  std::vector<float> H(size_t(point_parts * rows), std::numeric_limits<float>::infinity());
  std::vector<std::vector<Candidate>> cands(size_t(point_parts * rows));
  if (point_parts > 1) {
    parallel_for(point_parts, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t)
        scan(args, N * t / point_parts, N * (t + 1) / point_parts, 0, blocks, H.data() + t * rows,
             cands.data() + t * rows);
    });
  } else {
    parallel_for(blocks, [&](int64_t b0, int64_t b1) {
      scan(args, 0, N, b0, b1, H.data() + b0 * QB, cands.data() + b0 * QB);
    }, work, kWorkPerThread);
  }

  // Exact re-check of every candidate that survives the final threshold (usually one or two
  // per query; up to kMaxCandidates for many points at exactly equal distances).
  double candidates = 0;
  for (const auto& c : cands) candidates += double(c.size());
  parallel_for(B, [&](int64_t lo, int64_t hi) {
    std::vector<double> buf(static_cast<size_t>(d));
    for (int64_t b = lo; b < hi; ++b) {
      float best_hi = std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < point_parts; ++t) best_hi = std::min(best_hi, H[t * rows + b]);
      const float thr = best_hi + thr_off[b];
      double best = std::numeric_limits<double>::infinity();
      int64_t best_idx = -1;
      for (int64_t t = 0; t < point_parts; ++t)
        for (const Candidate& c : cands[t * rows + b]) {
          if (!(c.lo <= thr)) continue;
          const double dist = numpy_sq_dist(P + c.idx * ldp, Q + b * d, d, buf.data());
          if (dist < best || (dist == best && c.idx < best_idx)) best = dist, best_idx = c.idx;
        }
      if (best_idx < 0) throw std::logic_error("egbas::nearest: no candidate survived (bug)");
      out_idx[b] = best_idx;
      out_dist2[b] = float(best);
    }
  }, (candidates + double(B)) * double(d) * 4, 1e5);
}

// The search over centred points Pc (N rows, stride ld, squared norms pnorm) for queries Q
// (B, d, original coordinates); re-checks against the original points P (stride ldp).
// centre: (d,) or nullptr for the origin. Queries go in slabs, which bounds the packed
// copy and the filter state whatever B is.
inline void nearest_centred(const float* Pc, int64_t ld, const float* pnorm, const float* P, int64_t ldp,
                            int64_t N, int64_t d, const float* centre, const float* Q, int64_t B,
                            int64_t* out_idx, float* out_dist2) {
  constexpr int64_t kSlab = 8192;
  for (int64_t b0 = 0; b0 < B; b0 += kSlab)
    nearest_slab(Pc, ld, pnorm, P, ldp, N, d, centre, Q + b0 * d, std::min(kSlab, B - b0), out_idx + b0,
                 out_dist2 + b0, b0);
}

// Squared norms (as float) of rows [lo, hi) of X after subtracting centre (nullptr: none),
// written to norms; centred copies to out (nullptr: none). Throws on NaN/inf/huge rows.
inline void centre_rows(const float* X, int64_t lo, int64_t hi, int64_t d, const float* centre, float* out,
                        float* norms, const char* name, int64_t index_base = 0) {
  for (int64_t i = lo; i < hi; ++i) {
    double n2 = 0;
    for (int64_t k = 0; k < d; ++k) {
      const float x = centre ? float(double(X[i * d + k]) - double(centre[k])) : X[i * d + k];
      if (out) out[i * d + k] = x;
      n2 += double(x) * x;
    }
    if (!std::isfinite(n2))
      throw std::invalid_argument(std::string(name) + " must be finite (row " + std::to_string(index_base + i) + ")");
    if (n2 > kMaxSquaredNorm)
      throw std::invalid_argument(std::string(name) + " are too large (row " + std::to_string(index_base + i) +
                                  " has squared norm > 1e30)");
    norms[i] = float(n2);
  }
}

// Ascending indices of the first row of each distinct value of X (N, d), or empty when all
// rows differ. A later copy of a row can never be the answer (its distance is the same and
// ties go to the lowest index), so the search drops copies: without that, N identical points
// would all survive the filter as candidates of every query (N x B entries, N x B exact
// re-checks). Identical rows have bit-identical norms, so rows are first grouped by norm
// (one hash probe each, O(N)); only rows whose norm repeats are hashed whole and compared.
// Treating two equal rows as different (a -0.0 against a 0.0) costs time, never exactness.
inline std::vector<int64_t> first_occurrences(const float* X, int64_t N, int64_t d, const float* norms) {
  if (N < 2) return {};
  auto bits = [](float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
  };
  auto mix = [](uint64_t h) {  // a 64-bit finaliser (MurmurHash3's fmix64): spreads near keys
    h ^= h >> 33, h *= 0xff51afd7ed558ccdULL, h ^= h >> 33, h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
  };
  uint64_t size = 2;
  while (size < 2 * uint64_t(N)) size <<= 1;  // load <= 1/2: short linear probes
  const uint64_t mask = size - 1;
  std::vector<int64_t> slot(size, -1);
  std::vector<uint64_t> slot_hash(size);
  std::vector<char> repeated(size_t(N), 0);
  bool any = false;
  for (int64_t i = 0; i < N; ++i) {
    const uint64_t key = bits(norms[i]);
    for (uint64_t s = mix(key) & mask;; s = (s + 1) & mask) {
      if (slot[s] < 0) {
        slot[s] = i, slot_hash[s] = key;
        break;
      }
      if (slot_hash[s] == key) {
        repeated[i] = repeated[slot[s]] = 1, any = true;
        break;
      }
    }
  }
  if (!any) return {};
  std::fill(slot.begin(), slot.end(), -1);
  std::vector<int64_t> keep;
  keep.reserve(size_t(N));
  for (int64_t i = 0; i < N; ++i) {
    const float* row = X + i * d;
    bool copy = false;
    if (repeated[i]) {
      uint64_t h = bits(norms[i]);
      for (int64_t k = 0; k < d; ++k) h = (h ^ bits(row[k])) * 0x100000001b3ULL;  // FNV-1a over words
      h = mix(h);
      for (uint64_t s = h & mask;; s = (s + 1) & mask) {
        if (slot[s] < 0) {
          slot[s] = i, slot_hash[s] = h;
          break;
        }
        if (slot_hash[s] == h && std::memcmp(X + slot[s] * d, row, size_t(d) * sizeof(float)) == 0) {
          copy = true;
          break;
        }
      }
    }
    if (!copy) keep.push_back(i);
  }
  if (int64_t(keep.size()) == N) return {};
  return keep;
}

}  // namespace detail

// points: (N, d), queries: (B, d), row-major float32. Writes idx (B,) and dist2 (B,).
// Throws std::invalid_argument on N == 0, d <= 0 or non-finite input.
inline void nearest(const float* points, int64_t N, int64_t d, const float* queries, int64_t B, int64_t* idx,
                    float* dist2) {
  if (d <= 0) throw std::invalid_argument("points must have at least one column");
  if (N <= 0) throw std::invalid_argument("points must have at least one row");
  // Pass 1: norms about the origin (and the finiteness check) plus per-part column sums.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(64, N / 1024));
  std::vector<float> norms(N);
  std::vector<double> sums(size_t(parts * d), 0.0);
  parallel_for(parts, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t r0 = N * t / parts, r1 = N * (t + 1) / parts;
      detail::centre_rows(points, r0, r1, d, nullptr, nullptr, norms.data(), "points");
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t k = 0; k < d; ++k) sums[t * d + k] += points[i * d + k];
    }
  }, double(N) * d, 1e6);
  std::vector<float> centre(d);
  double mean_norm = 0, centre_norm = 0;
  for (int64_t i = 0; i < N; ++i) mean_norm += norms[i];
  mean_norm /= double(N);
  for (int64_t k = 0; k < d; ++k) {
    double s = 0;
    for (int64_t t = 0; t < parts; ++t) s += sums[t * d + k];
    centre[k] = float(s / double(N));
    centre_norm += double(centre[k]) * centre[k];
  }
  // Copies of earlier rows are dropped (see first_occurrences): the search runs over the
  // M distinct rows and its answers are mapped back to indices of `points`.
  const std::vector<int64_t> keep = detail::first_occurrences(points, N, d, norms.data());
  const float* P = points;
  int64_t M = N;
  std::vector<float> distinct;
  if (!keep.empty()) {
    M = int64_t(keep.size());
    distinct.resize(size_t(M * d));
    for (int64_t i = 0; i < M; ++i) {
      std::memcpy(distinct.data() + i * d, points + keep[i] * d, size_t(d) * sizeof(float));
      norms[i] = norms[keep[i]];  // keep is ascending, so this never overwrites a norm still needed
    }
    P = distinct.data();
  }
  // A cloud far from the origin is centred on its mean (one copy); one around the origin
  // is used in place. Either way the answer is exact; centring only narrows the filter.
  if (centre_norm <= 0.25 * mean_norm) {
    detail::nearest_centred(P, d, norms.data(), P, d, M, d, nullptr, queries, B, idx, dist2);
  } else {
    std::vector<float> centred(size_t(M * d));
    parallel_for(M, [&](int64_t lo, int64_t hi) {
      detail::centre_rows(P, lo, hi, d, centre.data(), centred.data(), norms.data(), "points");
    }, double(M) * d, 1e5);
    detail::nearest_centred(centred.data(), d, norms.data(), P, d, M, d, centre.data(), queries, B, idx, dist2);
  }
  if (!keep.empty())
    for (int64_t b = 0; b < B; ++b) idx[b] = keep[idx[b]];
}

}  // namespace egbas
