"""Optional CUDA kernels: same answers as the CPU core where a GPU exists, a clear error otherwise."""
import numpy as np
import pytest

from egbas_fast import core

from .test_core_bits import pack_oracle
from .test_core_nearest import oracle, ring


def test_cuda_absent_raises_clearly():
    if core.cuda_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        core.nearest_cuda(np.zeros((2, 3), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(RuntimeError, match="CUDA"):
        core.pack_signs_cuda(np.zeros((2, 3), np.float32))


@pytest.mark.skipif(not core.cuda_available(), reason="no CUDA device")
@pytest.mark.parametrize("N,d,B", [(1, 1, 1), (1000, 130, 77), (300, 600, 5)])
def test_cuda_nearest_exact(N, d, B):
    rng = np.random.default_rng(N + d)
    points = (20 + rng.standard_normal((N, d))).astype(np.float32)
    points[: N // 2] = points[N // 2: 2 * (N // 2)]  # duplicates
    queries = (20 + rng.standard_normal((B, d))).astype(np.float32)
    idx, dist = core.nearest_cuda(points, queries)
    want_idx, want_dist = oracle(points, queries)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(dist, want_dist)
    points, query = ring(rng, d, 500, 20.0, 1.0, 30.0)
    np.testing.assert_array_equal(core.nearest_cuda(points, query)[0], oracle(points, query)[0])


@pytest.mark.skipif(not core.cuda_available(), reason="no CUDA device")
@pytest.mark.parametrize("n", [1, 31, 64, 65, 1000])
def test_cuda_pack_signs(n):
    values = np.random.default_rng(n).standard_normal((9, n)).astype(np.float32)
    np.testing.assert_array_equal(core.pack_signs_cuda(values, 0.1), pack_oracle(values, 0.1))
    values[3, n // 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        core.pack_signs_cuda(values)
