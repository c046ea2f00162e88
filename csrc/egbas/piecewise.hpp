// Exact Hamiltonian Monte Carlo for the standard normal N(0, I) truncated to a union of polytopes
//     { z : L act(A z + c) + e > 0 },   act(p) = p for p > 0, slope * p otherwise,
// the region of an affine -> ReLU (slope 0) or LeakyReLU -> affine prefix of a network.
//
// The free motion is z(t) = z cos t + v sin t (Pakman & Paninski, "Exact Hamiltonian Monte Carlo for truncated
// multivariate Gaussians", JCGS 2014). Each hidden pre-activation p_j(t) = A_j z(t) + c_j is a sinusoid, so the
// times where a hidden unit switches piece are closed-form; between two switches every selected value
// h_i(t) = L_i act(p(t)) + e_i is again a sinusoid, whose coefficients change by one column of L per switch.
// The particle passes hidden switches untouched (the potential is the same on both sides: Mohasel Afshar & Domke,
// "Reflection, refraction, and Hamiltonian Monte Carlo", NeurIPS 2015) and reflects off the selected unit it
// leaves through, on that unit's gradient in the current piece. Travel time and energy are exact, so the
// trajectory is reversible and volume-preserving: no accept/reject step.
//
// Cost per trajectory: a pass over the m hidden units per wall (switch times), one pass over the k selected
// units per piece (a cheap screen; exact exit times only where the screen cannot rule one out) and a sparse
// column of L per switch. The selected units' Jacobian J = L diag(w) A on the current piece is carried per
// chain (`Piece`) and moved by one sparse rank-1 term per hidden unit that changed piece between walls.
// Plain loops, no BLAS: the same arithmetic in the same order whatever the machine's thread count.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "parallel.hpp"
#include "simd.hpp"

namespace egbas {

namespace detail {
// Dense kernels of the trajectory, compiled for AVX2 (without FMA: multiply and add round separately, so every
// instruction set gives the same bits) and for the baseline; chosen at run time.
#define EGBAS_PIECEWISE_KERNELS(suffix)                                                                           \
  inline void axpy_##suffix(double alpha, const double* x, double* y, int64_t n) {                              \
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];                                                        \
  }                                                                                                              \
  /* flags[i] = 1 unless value i (a cos t + b sin t + c) is positive at both ends of [lo, hi] and cannot dip   \
     below 0 in between: |h''| <= |a| + |b|, so h >= min(ends) - (|a| + |b|) (hi - lo)^2 / 8 */                \
  inline int64_t screen_##suffix(const double* a, const double* b, const double* c, int64_t k, double cos_lo,    \
                                 double sin_lo, double cos_hi, double sin_hi, double reach, unsigned char* flags) {  \
    int64_t flagged = 0;                                                                                         \
    for (int64_t i = 0; i < k; ++i) {                                                                            \
      const double at_lo = a[i] * cos_lo + b[i] * sin_lo, at_hi = a[i] * cos_hi + b[i] * sin_hi;                 \
      const double ends = (at_lo < at_hi ? at_lo : at_hi) + c[i];                                                \
      flags[i] = ends <= (std::fabs(a[i]) + std::fabs(b[i])) * reach;                                            \
      flagged += flags[i];                                                                                       \
    }                                                                                                            \
    return flagged;                                                                                              \
  }                                                                                                              \
  /* out[r] = M[r] . x: four partial sums in a fixed order (vectorisable, the same bits on every instruction set) */ \
  inline void matvec_##suffix(const double* M, const double* x, int64_t rows, int64_t cols, double* out) {        \
    for (int64_t r = 0; r < rows; ++r) {                                                                         \
      const double* row = M + r * cols;                                                                          \
      double sx[4] = {0, 0, 0, 0};                                                                               \
      int64_t t = 0;                                                                                             \
      for (; t + 4 <= cols; t += 4)                                                                              \
        for (int q = 0; q < 4; ++q) sx[q] += row[t + q] * x[t + q];                                              \
      for (; t < cols; ++t) sx[0] += row[t] * x[t];                                                              \
      out[r] = (sx[0] + sx[1]) + (sx[2] + sx[3]);                                                                \
    }                                                                                                            \
  }                                                                                                              \
  /* the same for two vectors at once (one pass over M) */                                                      \
  inline void matvec2_##suffix(const double* M, const double* x, const double* y, int64_t rows, int64_t cols,    \
                               double* out_x, double* out_y) {                                                   \
    for (int64_t r = 0; r < rows; ++r) {                                                                         \
      const double* row = M + r * cols;                                                                          \
      double sx[4] = {0, 0, 0, 0}, sy[4] = {0, 0, 0, 0};                                                         \
      int64_t t = 0;                                                                                             \
      for (; t + 4 <= cols; t += 4)                                                                              \
        for (int q = 0; q < 4; ++q) sx[q] += row[t + q] * x[t + q], sy[q] += row[t + q] * y[t + q];             \
      for (; t < cols; ++t) sx[0] += row[t] * x[t], sy[0] += row[t] * y[t];                                      \
      out_x[r] = (sx[0] + sx[1]) + (sx[2] + sx[3]);                                                              \
      out_y[r] = (sy[0] + sy[1]) + (sy[2] + sy[3]);                                                              \
    }                                                                                                            \
  }
EGBAS_PIECEWISE_KERNELS(scalar)
#if EGBAS_X86
EGBAS_TARGET_BEGIN("avx2")
EGBAS_PIECEWISE_KERNELS(avx2)
EGBAS_TARGET_END
#endif
#undef EGBAS_PIECEWISE_KERNELS

inline void axpy(double alpha, const double* x, double* y, int64_t n) {
#if EGBAS_X86
  if (active_isa() != Isa::scalar) return axpy_avx2(alpha, x, y, n);
#endif
  axpy_scalar(alpha, x, y, n);
}
inline int64_t screen(const double* a, const double* b, const double* c, int64_t k, double cos_lo, double sin_lo,
                      double cos_hi, double sin_hi, double reach, unsigned char* flags) {
#if EGBAS_X86
  if (active_isa() != Isa::scalar) return screen_avx2(a, b, c, k, cos_lo, sin_lo, cos_hi, sin_hi, reach, flags);
#endif
  return screen_scalar(a, b, c, k, cos_lo, sin_lo, cos_hi, sin_hi, reach, flags);
}
inline void matvec(const double* M, const double* x, int64_t rows, int64_t cols, double* out) {
#if EGBAS_X86
  if (active_isa() != Isa::scalar) return matvec_avx2(M, x, rows, cols, out);
#endif
  matvec_scalar(M, x, rows, cols, out);
}
inline void matvec2(const double* M, const double* x, const double* y, int64_t rows, int64_t cols, double* out_x,
                    double* out_y) {
#if EGBAS_X86
  if (active_isa() != Isa::scalar) return matvec2_avx2(M, x, y, rows, cols, out_x, out_y);
#endif
  matvec2_scalar(M, x, y, rows, cols, out_x, out_y);
}

constexpr double kTwoPi = 6.283185307179586;  // 2 pi as numpy's 2 * math.pi

// numpy's np.mod(x, 2 pi) (a float remainder with the divisor's sign).
inline double mod_two_pi(double x) {
  double r = std::fmod(x, kTwoPi);
  if (r != 0.0) {
    if (r < 0.0) r += kTwoPi;
  } else {
    r = 0.0;
  }
  return r;
}

// The time in [0, 2 pi) at which a cos t + b sin t + c crosses 0 downward (inside -> outside), inf where never.
// With a cos t + b sin t = R cos(t - phi) the zeros are phi +- acos(-c / R); only phi + acos(-c / R) is an exit.
inline double exit_time(double a, double b, double c) {
  const double ratio = -c / std::hypot(a, b);
  if (!(std::fabs(ratio) < 1.0)) return std::numeric_limits<double>::infinity();
  return mod_two_pi(std::atan2(b, a) + std::acos(ratio));
}
}  // namespace detail

class PiecewiseHMC {
 public:
  // One chain's current affine piece: slopes w (m) of the hidden units, and the selected values there,
  // h(z) = J z + e with J (k, d) = L diag(w) A and e (k) = L (w * c) + e0. A cache: any piece is a valid start.
  struct Piece {
    std::vector<double> J, e, w;
  };

  // A (m, d), c (m), L (k, m), e (k) row-major; slope >= 0 the activation's slope below 0; w0 (m) the slopes
  // of the piece chains start in. Everything is copied; L is kept as sparse columns (a hidden unit's column
  // usually touches a fraction of the selected units: a transposed convolution's receptive field).
  PiecewiseHMC(const double* A, const double* c, double slope, const double* L, const double* e, const double* w0,
               int64_t m, int64_t d, int64_t k)
      : m_(m), d_(d), k_(k), slope_(slope), A_(A, A + m * d), c_(c, c + m), col_start_(m + 1, 0) {
    if (m <= 0 || d <= 0 || k <= 0) throw std::invalid_argument("PiecewiseHMC: sizes must be positive");
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < m; ++j) col_start_[j + 1] += L[i * m + j] != 0.0;
    for (int64_t j = 0; j < m; ++j) col_start_[j + 1] += col_start_[j];
    col_row_.resize(col_start_[m]);
    col_val_.resize(col_start_[m]);
    std::vector<int64_t> fill(col_start_.begin(), col_start_.end() - 1);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < m; ++j)
        if (L[i * m + j] != 0.0) {
          col_row_[fill[j]] = i;
          col_val_[fill[j]++] = L[i * m + j];
        }
    start_.J.assign(k * d, 0.0);
    start_.e.assign(e, e + k);
    start_.w.assign(m, 0.0);  // the all-zero piece (J = 0): move_to adds every unit's term once
    move_to(start_, w0);
  }

  int64_t m() const { return m_; }
  int64_t d() const { return d_; }
  int64_t k() const { return k_; }
  int64_t nonzeros() const { return col_start_[m_]; }
  const Piece& start() const { return start_; }

  // Moves `piece` to the slopes w (m): one sparse rank-1 term per hidden unit whose slope changes.
  void move_to(Piece& piece, const double* w) const {
    for (int64_t j = 0; j < m_; ++j) {
      const double dw = w[j] - piece.w[j];
      if (dw == 0.0) continue;
      for (int64_t s = col_start_[j]; s < col_start_[j + 1]; ++s) {
        const double coef = col_val_[s] * dw;
        detail::axpy(coef, A_.data() + j * d_, piece.J.data() + col_row_[s] * d_, d_);
        piece.e[col_row_[s]] += coef * c_[j];
      }
      piece.w[j] = w[j];
    }
  }

  // One trajectory of travel time `travel` from z (d, inside the region) with velocity v (d), both updated in
  // place (v ends as the final velocity); `piece` is moved along. Returns the number of walls hit, or -1 when
  // `max_bounces` walls did not finish it (z, v are then mid-trajectory: the caller keeps the chain's old state).
  // path (record, d), if record > 0: the positions at times travel * r / record, r = 1..record (the last: the end).
  int64_t trajectory(Piece& piece, double* z, double* v, double travel, int64_t max_bounces, int64_t record = 0,
                     double* path = nullptr) const {
    const int64_t m = m_, d = d_, k = k_;
    std::vector<double> pa(m), pb(m), w(m), a(k), b(k), cc(k), An(m), normal(d);
    std::vector<unsigned char> flags(k);
    std::vector<std::pair<double, int64_t>> switches;  // a min-heap of (time, j) first zeros, (time, m + j) second
    const auto later = [](const std::pair<double, int64_t>& x, const std::pair<double, int64_t>& y) { return y < x; };
    detail::matvec2(A_.data(), z, v, m, d, pa.data(), pb.data());  // hidden pre-activations minus c
    double left = travel;
    int64_t recorded = 0;
    // positions at the record times up to `until` (trajectory time) on the segment that started at travel - left
    const auto record_up_to = [&](double until) {
      for (; recorded < record && travel * double(recorded + 1) / double(record) <= until; ++recorded) {
        const double tau = travel * double(recorded + 1) / double(record) - (travel - left);
        const double ct = std::cos(tau), st = std::sin(tau);
        for (int64_t t = 0; t < d; ++t) path[recorded * d + t] = z[t] * ct + v[t] * st;
      }
    };
    for (int64_t bounce = 0; bounce < max_bounces; ++bounce) {
      for (int64_t j = 0; j < m; ++j) w[j] = pa[j] + c_[j] > 0 ? 1.0 : slope_;  // slopes at the segment's start
      move_to(piece, w.data());
      // every hidden switch in (0, left): both zeros of each sinusoid, earliest first (ties: first zeros first)
      switches.clear();
      const double cos_left = std::cos(left), sin_left = std::sin(left);
      for (int64_t j = 0; j < m; ++j) {
        if (left < 3.0) {  // cheap proof of no zero in (0, left) (a window shorter than pi: p' changes sign once)
          const double p0 = pa[j] + c_[j], p1 = pa[j] * cos_left + pb[j] * sin_left + c_[j];
          const double d0 = pb[j], d1 = pb[j] * cos_left - pa[j] * sin_left;
          const double tiny = 1e-9 * (std::fabs(pa[j]) + std::fabs(pb[j]) + std::fabs(c_[j]));
          const bool clear_ends = std::fabs(p0) > tiny && std::fabs(p1) > tiny && (p0 > 0) == (p1 > 0);
          const bool monotone = std::fabs(d0) > tiny && std::fabs(d1) > tiny && (d0 > 0) == (d1 > 0);
          if (clear_ends && monotone) continue;
        }
        const double ratio = -c_[j] / std::hypot(pa[j], pb[j]);
        if (!(std::fabs(ratio) < 1.0)) continue;
        const double phi = std::atan2(pb[j], pa[j]), delta = std::acos(ratio);
        const double t0 = detail::mod_two_pi(phi - delta), t1 = detail::mod_two_pi(phi + delta);
        if (t0 > 0 && t0 < left) switches.emplace_back(t0, j);
        if (t1 > 0 && t1 < left) switches.emplace_back(t1, m + j);
      }
      std::make_heap(switches.begin(), switches.end(), later);
      // cos, sin, const coefficients of every selected value on the first piece
      detail::matvec2(piece.J.data(), z, v, k, d, a.data(), b.data());
      std::copy(piece.e.begin(), piece.e.end(), cc.begin());
      // walk the pieces in time order until a selected value reaches 0
      double lo = 0.0, cos_lo = 1.0, sin_lo = 0.0, hit = std::numeric_limits<double>::infinity();
      int64_t unit = -1;
      for (;;) {
        const double hi = switches.empty() ? left : switches.front().first;
        const double cos_hi = std::cos(hi), sin_hi = std::sin(hi);
        const int64_t flagged = detail::screen(a.data(), b.data(), cc.data(), k, cos_lo, sin_lo, cos_hi, sin_hi,
                                               (hi - lo) * (hi - lo) / 8, flags.data());
        for (int64_t i = 0; flagged && i < k; ++i) {
          if (!flags[i]) continue;
          const double t = detail::exit_time(a[i], b[i], cc[i]);
          if (t >= lo && t <= hi && t > 0 && t < hit) hit = t, unit = i;
        }
        if (unit >= 0 || switches.empty()) break;
        // pass the next switch: hidden unit j changes slope; every selected value's sinusoid moves by L[:, j]
        const int64_t j = switches.front().second % m;
        std::pop_heap(switches.begin(), switches.end(), later);
        switches.pop_back();
        const double dw = 1.0 + slope_ - 2.0 * w[j];
        w[j] = 1.0 + slope_ - w[j];
        const double sa = pa[j] * dw, sb = pb[j] * dw, sc = c_[j] * dw;
        for (int64_t q = col_start_[j]; q < col_start_[j + 1]; ++q) {
          const int64_t i = col_row_[q];
          const double l = col_val_[q];
          a[i] += l * sa;
          b[i] += l * sb;
          cc[i] += l * sc;
        }
        lo = hi, cos_lo = cos_hi, sin_lo = sin_hi;
      }
      if (unit < 0) {  // no wall before the end of the travel
        if (record > 0) record_up_to(travel);
        rotate(z, v, d, cos_left, sin_left);
        if (record > 0) std::copy(z, z + d, path + (record - 1) * d);  // the last record time is the end
        return bounce;
      }
      if (record > 0) record_up_to(travel - left + hit);
      move_to(piece, w.data());  // the piece the wall is on
      const double ch = std::cos(hit), sh = std::sin(hit);
      rotate(z, v, d, ch, sh);
      rotate(pa.data(), pb.data(), m, ch, sh);
      // reflect off the wall: the selected value's gradient on the current piece
      std::copy(piece.J.begin() + unit * d, piece.J.begin() + (unit + 1) * d, normal.begin());
      double vn = 0, nn = 0;
      for (int64_t t = 0; t < d; ++t) vn += v[t] * normal[t], nn += normal[t] * normal[t];
      const double kick = 2.0 * vn / nn;
      detail::axpy(-kick, normal.data(), v, d);
      detail::matvec(A_.data(), normal.data(), m, d, An.data());
      detail::axpy(-kick, An.data(), pb.data(), m);
      left -= hit;
    }
    return -1;
  }

  // Runs one trajectory per chain: Z, V (C, d) updated in place, pieces[c] the chain's piece cache (grown to C
  // copies of the start piece), bounces (C) as `trajectory` returns. Chains run in parallel; each chain's
  // arithmetic is sequential, so results do not depend on the thread count.
  // paths (C, record, d) as `trajectory` writes path, if record > 0.
  void trajectories(std::vector<Piece>& pieces, double* Z, double* V, int64_t C, double travel, int64_t max_bounces,
                    int64_t* bounces, int64_t record = 0, double* paths = nullptr) const {
    while (static_cast<int64_t>(pieces.size()) < C) pieces.push_back(start_);
    parallel_for(C, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        bounces[r] = trajectory(pieces[r], Z + r * d_, V + r * d_, travel, max_bounces, record,
                                record > 0 ? paths + r * record * d_ : nullptr);
    }, 1e18, 1.0);
  }

 private:
  // (x, y) <- (x cos t + y sin t, -x sin t + y cos t): the free motion's rotation by time t
  static void rotate(double* x, double* y, int64_t n, double cos_t, double sin_t) {
    for (int64_t i = 0; i < n; ++i) {
      const double xi = x[i];
      x[i] = xi * cos_t + y[i] * sin_t;
      y[i] = -xi * sin_t + y[i] * cos_t;
    }
  }
  int64_t m_, d_, k_;
  double slope_;
  std::vector<double> A_, c_;
  std::vector<int64_t> col_start_, col_row_;  // L's nonzeros by column: rows col_row_[col_start_[j] .. [j + 1])
  std::vector<double> col_val_;
  Piece start_;
};

}  // namespace egbas
