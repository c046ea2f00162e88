// Sign bits of a layer: pack_signs turns (B, n) activations into (B, ceil(n/64)) uint64
// words (unit i -> bit i % 64 of word i / 64, set iff value > threshold, padding bits 0);
// mismatch_count counts, per row, the masked bits that differ from a reference row.
#pragma once
#include <cstdint>

#include "parallel.hpp"
#include "simd.hpp"

namespace egbas {

inline int64_t words_for(int64_t n_units) { return (n_units + 63) / 64; }

namespace detail {

// One word from `count` (<= 64) values. NaN compares false; *nan records that one was seen.
inline uint64_t pack_word_scalar(const float* v, int64_t count, float threshold, bool* nan) {
  uint64_t word = 0;
  bool any_nan = false;
  for (int64_t i = 0; i < count; ++i) {
    word |= static_cast<uint64_t>(v[i] > threshold) << i;
    any_nan |= v[i] != v[i];
  }
  *nan |= any_nan;
  return word;
}

inline int32_t mismatch_row_scalar(const uint64_t* bits, const uint64_t* ref, const uint64_t* mask, int64_t w) {
  int64_t count = 0;
  for (int64_t i = 0; i < w; ++i) count += __builtin_popcountll((bits[i] ^ ref[i]) & mask[i]);
  return static_cast<int32_t>(count);
}

}  // namespace detail
}  // namespace egbas

#if EGBAS_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,popcnt")
#endif
namespace egbas::detail::avx2 {
inline uint64_t pack_word(const float* v, int64_t count, float threshold, bool* nan) {
  if (count < 64) return pack_word_scalar(v, count, threshold, nan);
  const __m256 t = _mm256_set1_ps(threshold);
  uint64_t word = 0;
  int nan_bits = 0;
  for (int j = 0; j < 8; ++j) {
    __m256 x = _mm256_loadu_ps(v + 8 * j);
    word |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(x, t, _CMP_GT_OQ))) << (8 * j);
    nan_bits |= _mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
  *nan |= nan_bits != 0;
  return word;
}
inline int32_t mismatch_row(const uint64_t* bits, const uint64_t* ref, const uint64_t* mask, int64_t w) {
  int64_t count = 0;
  for (int64_t i = 0; i < w; ++i) count += _mm_popcnt_u64((bits[i] ^ ref[i]) & mask[i]);
  return static_cast<int32_t>(count);
}
}  // namespace egbas::detail::avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,popcnt"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,popcnt")
#endif
namespace egbas::detail::avx512 {
inline uint64_t pack_word(const float* v, int64_t count, float threshold, bool* nan) {
  const __m512 t = _mm512_set1_ps(threshold);
  if (count == 64) {  // the common case: four plain loads
    __m512 x0 = _mm512_loadu_ps(v), x1 = _mm512_loadu_ps(v + 16), x2 = _mm512_loadu_ps(v + 32),
           x3 = _mm512_loadu_ps(v + 48);
    uint64_t word = uint64_t(_mm512_cmp_ps_mask(x0, t, _CMP_GT_OQ)) |
                    uint64_t(_mm512_cmp_ps_mask(x1, t, _CMP_GT_OQ)) << 16 |
                    uint64_t(_mm512_cmp_ps_mask(x2, t, _CMP_GT_OQ)) << 32 |
                    uint64_t(_mm512_cmp_ps_mask(x3, t, _CMP_GT_OQ)) << 48;
    // cmp(a, b, UNORD) is true where a or b is NaN: two compares cover the word.
    *nan |= (_mm512_cmp_ps_mask(x0, x1, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(x2, x3, _CMP_UNORD_Q)) != 0;
    return word;
  }
  uint64_t word = 0;
  __mmask16 nan_bits = 0;
  for (int j = 0; 16 * j < count; ++j) {  // the row's last, partial word: masked loads
    int64_t left = count - 16 * j;
    __mmask16 valid = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    __m512 x = _mm512_maskz_loadu_ps(valid, v + 16 * j);
    word |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(valid, x, t, _CMP_GT_OQ)) << (16 * j);
    nan_bits |= _mm512_mask_cmp_ps_mask(valid, x, x, _CMP_UNORD_Q);
  }
  *nan |= nan_bits != 0;
  return word;
}
}  // namespace egbas::detail::avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // EGBAS_X86

namespace egbas {

// values: (B, n) row-major float32; out: (B, words_for(n)) uint64. Returns false (and
// leaves `out` unspecified) if a value is NaN; the caller reports it.
inline bool pack_signs(const float* values, int64_t B, int64_t n, float threshold, uint64_t* out) {
  const int64_t W = words_for(n);
  std::atomic<bool> saw_nan{false};
  const Isa isa = active_isa();
  parallel_for(B * W, [&](int64_t lo, int64_t hi) {
    bool nan = false;
    for (int64_t f = lo; f < hi; ++f) {
      const int64_t b = f / W, w = f % W;
      const float* v = values + b * n + 64 * w;
      const int64_t count = n - 64 * w < 64 ? n - 64 * w : 64;
#if EGBAS_X86
      if (isa == Isa::avx512)
        out[f] = detail::avx512::pack_word(v, count, threshold, &nan);
      else if (isa == Isa::avx2)
        out[f] = detail::avx2::pack_word(v, count, threshold, &nan);
      else
#endif
        out[f] = detail::pack_word_scalar(v, count, threshold, &nan);
    }
    if (nan) saw_nan = true;
  }, static_cast<double>(B) * n, 1 << 18);
  return !saw_nan;
}

// bits: (B, w); ref, mask: (w,); out: (B,) = popcount((bits ^ ref) & mask) per row.
inline void mismatch_count(const uint64_t* bits, int64_t B, int64_t w, const uint64_t* ref, const uint64_t* mask,
                           int32_t* out) {
  const Isa isa = active_isa();
  parallel_for(B, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
#if EGBAS_X86
      if (isa != Isa::scalar)
        out[b] = detail::avx2::mismatch_row(bits + b * w, ref, mask, w);
      else
#endif
        out[b] = detail::mismatch_row_scalar(bits + b * w, ref, mask, w);
    }
  }, static_cast<double>(B) * w, 1 << 16);
}

}  // namespace egbas
