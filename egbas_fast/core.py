"""The low-level C++ core (``egbas_fast._core``): exact, deterministic, numpy in / numpy out.

Input policy (every function):
  * Arrays of any real numeric dtype and any memory layout are accepted and converted to
    C-contiguous float32 (bit words: to uint64). A float64 argument is therefore rounded to
    float32 first, and results are exact for the float32 values. Other dtypes (object,
    complex, str) raise TypeError.
  * Wrong number of dimensions or mismatched shapes raise ValueError naming the argument and
    the expected shape. NaN/inf in points/queries/origins/targets/centres, NaN in
    ``pack_signs`` values, and non-positive sizes (step, capacity, dim, radius/half_width,
    thread count) or negative counts raise ValueError. Errors are raised before any result
    is returned; nothing is ever modified half-way (``Tree.add`` validates first).
  * The GIL is released while the C++ code runs; the core uses ``get_num_threads()`` threads
    (default: all cores) and its results never depend on that number.

Functions:
  pack_signs(values, threshold=0.0)   (B, n) float32 -> (B, ceil(n/64)) uint64. Unit i is bit
      i % 64 of word i // 64, set iff values[:, i] > threshold; padding bits are 0.
  mismatch_count(bits, ref, mask)     (B, w), (w,), (w,) uint64 -> (B,) int32:
      popcount((bits ^ ref) & mask) per row.
  set_num_threads(k) / get_num_threads()   k >= 1 threads; k = 0 restores the default.
  simd_isa()                          the instruction set the kernels use ("avx512", "avx2", "scalar").
"""
from ._core import (  # noqa: F401
    get_num_threads,
    mismatch_count,
    pack_signs,
    set_num_threads,
    simd_isa,
)

__all__ = [
    "get_num_threads",
    "mismatch_count",
    "pack_signs",
    "set_num_threads",
    "simd_isa",
]
