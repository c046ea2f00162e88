// Optional CUDA kernels (compiled only with -DEGBAS_CUDA=ON and a CUDA compiler).
// Host pointers in and out; each call copies to the device and back. Same results as the
// CPU core: nearest is exact in numpy's float64 order, pack_signs has the same bit layout.
#pragma once
#include <cstdint>

namespace egbas::cuda {

// True when a CUDA device can be used.
bool available();

// points (N, d), queries (B, d) -> idx (B,), dist2 (B,). Throws std::runtime_error on CUDA errors.
void nearest(const float* points, int64_t N, int64_t d, const float* queries, int64_t B, int64_t* idx,
             float* dist2);

// values (B, n) -> out (B, ceil(n/64)). Returns false if a value is NaN.
bool pack_signs(const float* values, int64_t B, int64_t n, float threshold, uint64_t* out);

}  // namespace egbas::cuda
