// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11). Draw k of a stream
// is a pure function of (seed, k), so a batch gives the same numbers whatever its size,
// offset split or thread count.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.hpp"

namespace egbas {

namespace detail {
// Stream tags keep the generators below independent for the same seed and draw.
enum : uint32_t { kTagBox = 0, kTagNormal = 1, kTagBallDirection = 2, kTagBallRadius = 3 };

struct Philox4x32 {
  uint32_t v[4];
  // counter = (draw lo, draw hi, coordinate, tag), key = seed.
  Philox4x32(uint64_t seed, uint64_t draw, uint32_t coord, uint32_t tag) {
    uint32_t c[4] = {uint32_t(draw), uint32_t(draw >> 32), coord, tag};
    uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = uint64_t(0xD2511F53u) * c[0], p1 = uint64_t(0xCD9E8D57u) * c[2];
      const uint32_t n0 = uint32_t(p1 >> 32) ^ c[1] ^ k0, n2 = uint32_t(p0 >> 32) ^ c[3] ^ k1;
      c[0] = n0, c[1] = uint32_t(p1), c[2] = n2, c[3] = uint32_t(p0);
      k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    }
    for (int i = 0; i < 4; ++i) v[i] = c[i];
  }
  // 53-bit uniforms from two words: in [0, 1) and (0, 1].
  double uniform01(int i) const { return double((uint64_t(v[i]) << 21) ^ (v[i + 1] >> 11)) * 0x1p-53; }
  double uniform_open0(int i) const { return (double((uint64_t(v[i]) << 21) ^ (v[i + 1] >> 11)) + 1.0) * 0x1p-53; }
  // Two independent standard normals by Box-Muller from all four words.
  void normal_pair(double* z0, double* z1) const {
    const double r = std::sqrt(-2.0 * std::log(uniform_open0(0))), angle = 6.283185307179586 * uniform01(2);
    *z0 = r * std::cos(angle);
    *z1 = r * std::sin(angle);
  }
};

// d standard normals of one draw; coordinates 2k and 2k+1 share a Philox block.
inline void normal_row(uint64_t seed, uint64_t draw, uint32_t tag, int64_t d, double* out) {
  for (int64_t j = 0; j < d; j += 2) {
    double z0, z1;
    Philox4x32(seed, draw, uint32_t(j / 2), tag).normal_pair(&z0, &z1);
    out[j] = z0;
    if (j + 1 < d) out[j + 1] = z1;
  }
}
}  // namespace detail

// out: (n, d); row i is uniform in the box centre +- half_width (draw offset + i).
inline void random_uniform_box(const float* centre, int64_t d, double half_width, int64_t n, uint64_t seed,
                               uint64_t offset, float* out) {
  parallel_for(n, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      for (int64_t j = 0; j < d; ++j) {
        detail::Philox4x32 r(seed, offset + uint64_t(i), uint32_t(j), detail::kTagBox);
        out[i * d + j] = float(centre[j] + half_width * (2.0 * r.uniform01(0) - 1.0));
      }
  }, double(n) * d * 20, 1e5);
}

// out: (n, d) independent standard normals (draw offset + i is row i).
inline void random_normal(int64_t n, int64_t d, uint64_t seed, uint64_t offset, float* out) {
  parallel_for(n, [&](int64_t lo, int64_t hi) {
    std::vector<double> z(static_cast<size_t>(d));
    for (int64_t i = lo; i < hi; ++i) {
      detail::normal_row(seed, offset + uint64_t(i), detail::kTagNormal, d, z.data());
      for (int64_t j = 0; j < d; ++j) out[i * d + j] = float(z[j]);
    }
  }, double(n) * d * 20, 1e5);
}

// out: (n, d); row i is uniform in the L2 ball of `radius` around centre: a Gaussian
// direction scaled by radius * U^(1/d).
inline void random_uniform_ball(const float* centre, int64_t d, double radius, int64_t n, uint64_t seed,
                                uint64_t offset, float* out) {
  parallel_for(n, [&](int64_t lo, int64_t hi) {
    std::vector<double> g(static_cast<size_t>(d));
    for (int64_t i = lo; i < hi; ++i) {
      const uint64_t draw = offset + uint64_t(i);
      detail::normal_row(seed, draw, detail::kTagBallDirection, d, g.data());
      double norm2 = 0;
      for (int64_t j = 0; j < d; ++j) norm2 += g[j] * g[j];
      if (norm2 == 0) g[0] = norm2 = 1;  // probability ~0; any direction is fine
      const double u = detail::Philox4x32(seed, draw, 0, detail::kTagBallRadius).uniform01(0);
      const double scale = radius * std::pow(u, 1.0 / double(d)) / std::sqrt(norm2);
      for (int64_t j = 0; j < d; ++j) out[i * d + j] = float(centre[j] + scale * g[j]);
    }
  }, double(n) * d * 40, 1e5);
}

}  // namespace egbas
