// RRT steering: move from an origin toward a target by at most `step` (L2).
#pragma once
#include <cmath>
#include <cstdint>

#include "parallel.hpp"

namespace egbas {

// origins, targets, out: (B, d). A target within `step` is reached exactly; otherwise
// out = origin + step * (target - origin) / |target - origin| (computed in double).
inline void steer(const float* origins, const float* targets, int64_t B, int64_t d, double step, float* out) {
  parallel_for(B, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const float *o = origins + b * d, *t = targets + b * d;
      float* r = out + b * d;
      double dist2 = 0;
      for (int64_t j = 0; j < d; ++j) {
        const double diff = double(t[j]) - double(o[j]);
        dist2 += diff * diff;
      }
      const double dist = std::sqrt(dist2);
      if (dist <= step) {
        for (int64_t j = 0; j < d; ++j) r[j] = t[j];
      } else {
        const double s = step / dist;
        for (int64_t j = 0; j < d; ++j) r[j] = float(double(o[j]) + s * (double(t[j]) - double(o[j])));
      }
    }
  }, double(B) * d, 1e5);
}

}  // namespace egbas
