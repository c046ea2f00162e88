"""The low-level C++ core (``egbas_fast._core``): exact, deterministic, numpy in / numpy out.

Input policy (every function):
  * Arrays of any real numeric dtype and any memory layout are accepted and converted to
    C-contiguous float32 (bit words: to uint64). A float64 argument is therefore rounded to
    float32 first, and results are exact for the float32 values. Bit words and parents need
    an integer dtype. Other dtypes (object, complex, str, float parents) raise TypeError.
  * Wrong number of dimensions or mismatched shapes raise ValueError naming the argument and
    the expected shape. NaN/inf in points/queries/origins/targets/centres, NaN in
    ``pack_signs`` values, and non-positive sizes (step, capacity, dim, radius/half_width,
    thread count) or negative counts raise ValueError. Errors are raised before any result
    is returned; nothing is ever modified half-way (``Tree.add`` validates first).
  * The GIL is released while the C++ code runs; the core uses ``get_num_threads()`` threads
    (default: $OMP_NUM_THREADS when set, else all cores) and its results never depend on that number.

Functions:
  nearest(points, queries)            (N, d), (B, d) -> (idx int64 (B,), dist2 float32 (B,)). Exact:
      idx[b] is numpy's argmin of ((P64 - q64)**2).sum(1) (ties to the lowest index) and dist2
      that float64 value rounded to float32. A fused float32 filter with a proven error bound
      keeps every possible winner, which is then re-checked in float64 in numpy's order; copies of an
      earlier point are dropped first (they can never win), so duplicates cost no extra time or memory.
  Tree(dim, capacity=1024)            growable RRT node store (append-only, capacity doubles).
      .add(points (k, dim), parents (k,)) -> int64 (k,) indices of the new nodes; a parent is
          -1 or an earlier node. Everything is checked before the tree changes.
      .nearest(queries (B, dim)) -> (idx, dist2), exact as `nearest`, over the current nodes.
      .points (size, dim) float32 and .parents (size,) int64: read-only zero-copy views that
          stay valid after later adds (copy with np.array before torch.from_numpy);
          .size (== len(tree)), .dim, .capacity. The search is centred on the first node
          (the RRT root), so a tight tree far from the origin stays exact and fast.
  steer(origins, targets, step)       (B, d), (B, d) -> (B, d): the target if within `step`,
      else origin + step * unit(target - origin) (computed in float64).
  random_uniform_box(center (d,), half_width, n, seed, offset=0) -> (n, d) float32
  random_uniform_ball(center (d,), radius, n, seed, offset=0) -> (n, d) float32 (uniform in the L2 ball)
  random_normal(n, d, seed, offset=0) -> (n, d) float32 standard normals
      Counter-based (Philox4x32-10): row i of a call is draw offset + i of the stream for
      `seed`, so a batch split into calls with offsets gives the same rows as one call,
      whatever the thread count.
  pack_signs(values, threshold=0.0)   (B, n) float32 -> (B, ceil(n/64)) uint64. Unit i is bit
      i % 64 of word i // 64, set iff values[:, i] > threshold; padding bits are 0. A NaN
      value (or threshold) raises ValueError; +-inf are ordinary values.
  mismatch_count(bits, ref, mask)     (B, w), (w,), (w,) uint64 -> (B,) int32:
      popcount((bits ^ ref) & mask) per row.
  PiecewiseHMC(A (m, d), c (m,), slope, L (k, m), e (k,), w0 (m,))   exact HMC for N(0, I) truncated to
      {z : L act(A z + c) + e > 0}, act(p) = p above 0 and slope * p below (slope >= 0; w0: 1 or slope per
      hidden unit, the piece chains start in). Inputs are converted to float64 (no rounding to float32) and
      must be finite. L is kept as sparse columns.
      .run(z (C, d), v (C, d), travel, max_bounces, record=0) -> (end float64 (C, d), bounces int64 (C,),
          path float64 (C, record, d)): one trajectory per chain from z (inside) with velocity v; bounces[r] =
          walls hit, or -1 when max_bounces walls did not finish it (end[r] and path[r] are then meaningless:
          keep the old state); path[r, i] = the position at time travel * (i + 1) / record. Chain r
          keeps its current piece between calls (a cache; its arithmetic is the same whatever the thread
          count, so results never depend on it). .shape = (m, d, k), .nonzeros = L's nonzero count.
  set_num_threads(k) / get_num_threads()   k >= 1 threads; k = 0 restores the default.
  simd_isa()                          the instruction set the kernels use ("avx512", "avx2", "scalar").
  cuda_available(), nearest_cuda(points, queries), pack_signs_cuda(values, threshold=0.0)
      Optional CUDA kernels with the same contract (host arrays in and out). Built only with
      `pip install -e . -Ccmake.define.EGBAS_CUDA=ON` and a CUDA compiler; otherwise
      cuda_available() is False and the *_cuda functions raise RuntimeError.
"""
from ._core import (  # noqa: F401
    PiecewiseHMC,
    Tree,
    cuda_available,
    get_num_threads,
    mismatch_count,
    nearest,
    nearest_cuda,
    pack_signs,
    pack_signs_cuda,
    random_normal,
    random_uniform_ball,
    random_uniform_box,
    set_num_threads,
    simd_isa,
    steer,
)

__all__ = [
    "PiecewiseHMC",
    "Tree",
    "cuda_available",
    "get_num_threads",
    "mismatch_count",
    "nearest",
    "nearest_cuda",
    "pack_signs",
    "pack_signs_cuda",
    "random_normal",
    "random_uniform_ball",
    "random_uniform_box",
    "set_num_threads",
    "simd_isa",
    "steer",
]
