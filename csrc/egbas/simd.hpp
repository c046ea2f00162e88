// Runtime CPU feature detection for the hand-written x86 kernels. Kernels are compiled
// for several instruction sets inside `#pragma GCC target` regions (never -march=native)
// and chosen here once per process; everything else builds as portable C++17.
#pragma once

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define EGBAS_X86 1
#include <immintrin.h>
#else
#define EGBAS_X86 0
#endif

// Code between EGBAS_TARGET_BEGIN("avx2,fma") and EGBAS_TARGET_END is compiled for that instruction set
// (GCC target regions, clang's attribute push: the same thing in each compiler's words).
#define EGBAS_PRAGMA(...) _Pragma(#__VA_ARGS__)
#if defined(__clang__)
#define EGBAS_TARGET_BEGIN(isa) EGBAS_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define EGBAS_TARGET_END EGBAS_PRAGMA(clang attribute pop)
#else
#define EGBAS_TARGET_BEGIN(isa) EGBAS_PRAGMA(GCC push_options) EGBAS_PRAGMA(GCC target(isa))
#define EGBAS_TARGET_END EGBAS_PRAGMA(GCC pop_options)
#endif

namespace egbas {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

namespace detail {
inline Isa detect_isa() {
#if EGBAS_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt"))
    return Isa::avx2;
#endif
  return Isa::scalar;
}
inline Isa& isa_setting() {
  static Isa isa = detect_isa();
  return isa;
}
}  // namespace detail

// The instruction set the kernels use (the best this CPU supports unless capped).
inline Isa active_isa() { return detail::isa_setting(); }
// Caps the instruction set (tests use it to run every code path); never raises it above the CPU's.
inline void limit_isa(Isa cap) {
  Isa best = detail::detect_isa();
  detail::isa_setting() = static_cast<int>(cap) < static_cast<int>(best) ? cap : best;
}
inline const char* isa_name(Isa isa) {
  return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "scalar";
}

}  // namespace egbas
