// CUDA versions of nearest (exact, brute force in float64 with numpy's summation order) and
// pack_signs (one warp ballot per 32 units). Correctness first: one thread per point/query
// pair is simple and exact; the CPU core remains the reference implementation.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "egbas_cuda.hpp"

namespace egbas::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(err));
}

// Device buffer that frees itself.
template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  explicit DeviceArray(size_t n) { check(cudaMalloc(&ptr, n * sizeof(T) + 1), "malloc"); }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

// numpy's pairwise float64 sum of (p[i] - q[i])^2, squares rounded before summing.
__device__ double sq(const float* p, const float* q, int64_t i) {
  const double diff = double(p[i]) - double(q[i]);
  return __dmul_rn(diff, diff);  // no FMA contraction into the sum
}
__device__ double pairwise_sq_dist(const float* p, const float* q, int64_t n) {
  if (n < 8) {
    double r = 0.;
    for (int64_t i = 0; i < n; ++i) r = __dadd_rn(r, sq(p, q, i));
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = sq(p, q, j);
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] = __dadd_rn(r[j], sq(p, q, i + j));
    double res = __dadd_rn(__dadd_rn(__dadd_rn(r[0], r[1]), __dadd_rn(r[2], r[3])),
                           __dadd_rn(__dadd_rn(r[4], r[5]), __dadd_rn(r[6], r[7])));
    for (; i < n; ++i) res = __dadd_rn(res, sq(p, q, i));
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return __dadd_rn(pairwise_sq_dist(p, q, n2), pairwise_sq_dist(p + n2, q + n2, n - n2));
}

constexpr int kThreads = 256;

__device__ bool better(double d, int64_t i, double best_d, int64_t best_i) {
  return d < best_d || (d == best_d && i < best_i);
}

// grid (chunks, B): the best (distance, index) of each chunk of kThreads points.
__global__ void nearest_chunks(const float* points, int64_t N, int64_t d, const float* queries,
                               double* part_dist, int64_t* part_idx) {
  __shared__ double sd[kThreads];
  __shared__ int64_t si[kThreads];
  const int64_t b = blockIdx.y, p = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  sd[threadIdx.x] = p < N ? pairwise_sq_dist(points + p * d, queries + b * d, d) : INFINITY;
  si[threadIdx.x] = p < N ? p : INT64_MAX;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s && better(sd[threadIdx.x + s], si[threadIdx.x + s], sd[threadIdx.x], si[threadIdx.x]))
      sd[threadIdx.x] = sd[threadIdx.x + s], si[threadIdx.x] = si[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) part_dist[b * gridDim.x + blockIdx.x] = sd[0], part_idx[b * gridDim.x + blockIdx.x] = si[0];
}

// One thread per query: ordered reduction over the chunks (deterministic).
__global__ void nearest_reduce(const double* part_dist, const int64_t* part_idx, int64_t chunks, int64_t B,
                               int64_t* idx, float* dist2) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  double best = INFINITY;
  int64_t best_i = INT64_MAX;
  for (int64_t c = 0; c < chunks; ++c)
    if (better(part_dist[b * chunks + c], part_idx[b * chunks + c], best, best_i))
      best = part_dist[b * chunks + c], best_i = part_idx[b * chunks + c];
  idx[b] = best_i;
  dist2[b] = float(best);
}

// grid (ceil(2W*32 / kThreads), B): thread = one unit; each warp's ballot is one 32-bit
// half of a word (little-endian: the low half holds units 0..31 of the word).
__global__ void pack_signs_kernel(const float* values, int64_t n, int64_t half_words, float threshold,
                                  uint32_t* out, int* saw_nan) {
  const int64_t b = blockIdx.y, u = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const float v = u < n ? values[b * n + u] : 0.f;
  if (u < n && isnan(v)) atomicOr(saw_nan, 1);
  const unsigned bits = __ballot_sync(0xFFFFFFFFu, u < n && v > threshold);
  if ((threadIdx.x & 31) == 0 && u / 32 < half_words) out[b * half_words + u / 32] = bits;
}

}  // namespace

bool available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

void nearest(const float* points, int64_t N, int64_t d, const float* queries, int64_t B, int64_t* idx,
             float* dist2) {
  if (B == 0) return;
  const int64_t chunks = (N + kThreads - 1) / kThreads;
  // Queries go in slabs whose partial results (16 bytes per query and chunk) fit in
  // kPartialBytes, so the scratch is bounded whatever B * N is (and grid.y <= 65535).
  constexpr int64_t kPartialBytes = int64_t(64) << 20;
  const int64_t per_slab = chunks * int64_t(sizeof(double) + sizeof(int64_t));
  const int64_t slab = std::max<int64_t>(1, std::min<int64_t>({B, 65535, kPartialBytes / per_slab}));
  DeviceArray<float> dp{size_t(N * d)}, dq{size_t(B * d)}, dd{size_t(B)};
  DeviceArray<double> part_dist{size_t(slab * chunks)};
  DeviceArray<int64_t> part_idx{size_t(slab * chunks)}, di{size_t(B)};
  check(cudaMemcpy(dp.ptr, points, sizeof(float) * N * d, cudaMemcpyHostToDevice), "copy points");
  check(cudaMemcpy(dq.ptr, queries, sizeof(float) * B * d, cudaMemcpyHostToDevice), "copy queries");
  for (int64_t b0 = 0; b0 < B; b0 += slab) {
    const int64_t nb = std::min(slab, B - b0);
    nearest_chunks<<<dim3(unsigned(chunks), unsigned(nb)), kThreads>>>(dp.ptr, N, d, dq.ptr + b0 * d, part_dist.ptr,
                                                                      part_idx.ptr);
    check(cudaGetLastError(), "nearest kernel");
    nearest_reduce<<<unsigned((nb + 127) / 128), 128>>>(part_dist.ptr, part_idx.ptr, chunks, nb, di.ptr + b0,
                                                         dd.ptr + b0);
    check(cudaGetLastError(), "nearest reduce");
  }
  check(cudaMemcpy(idx, di.ptr, sizeof(int64_t) * B, cudaMemcpyDeviceToHost), "copy idx");
  check(cudaMemcpy(dist2, dd.ptr, sizeof(float) * B, cudaMemcpyDeviceToHost), "copy dist2");
}

bool pack_signs(const float* values, int64_t B, int64_t n, float threshold, uint64_t* out) {
  const int64_t words = (n + 63) / 64, half_words = 2 * words;
  if (B == 0 || words == 0) return true;
  DeviceArray<float> dv{size_t(B * n)};
  DeviceArray<uint32_t> dout{size_t(B * half_words)};
  DeviceArray<int> nan{1};
  check(cudaMemcpy(dv.ptr, values, sizeof(float) * B * n, cudaMemcpyHostToDevice), "copy values");
  check(cudaMemset(nan.ptr, 0, sizeof(int)), "memset");
  const int64_t blocks = (half_words * 32 + kThreads - 1) / kThreads;
  for (int64_t b0 = 0; b0 < B; b0 += 65535) {
    const int64_t nb = B - b0 < 65535 ? B - b0 : 65535;
    pack_signs_kernel<<<dim3(unsigned(blocks), unsigned(nb)), kThreads>>>(dv.ptr + b0 * n, n, half_words, threshold,
                                                                         dout.ptr + b0 * half_words, nan.ptr);
  }
  check(cudaGetLastError(), "pack_signs kernel");
  int saw_nan = 0;
  check(cudaMemcpy(&saw_nan, nan.ptr, sizeof(int), cudaMemcpyDeviceToHost), "copy flag");
  check(cudaMemcpy(out, dout.ptr, sizeof(uint64_t) * B * words, cudaMemcpyDeviceToHost), "copy bits");
  return saw_nan == 0;
}

}  // namespace egbas::cuda
