"""core.steer and the counter-based random generators."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egbas_fast import core


@settings(max_examples=40, deadline=None)
@given(B=st.integers(0, 20), d=st.integers(1, 50), step=st.floats(1e-4, 10), seed=st.integers(0, 2**32 - 1))
def test_steer_property(B, d, step, seed):
    rng = np.random.default_rng(seed)
    origins = (rng.standard_normal((B, d)) * 10).astype(np.float32)
    targets = (origins + rng.standard_normal((B, d)) * rng.choice([1e-3, 1.0, 30.0])).astype(np.float32)
    out = core.steer(origins, targets, step)
    assert out.shape == (B, d) and out.dtype == np.float32
    o, t = origins.astype(np.float64), targets.astype(np.float64)
    dist = np.linalg.norm(t - o, axis=1, keepdims=True)
    want = np.where(dist <= step, t, o + step * (t - o) / np.where(dist > 0, dist, 1)).astype(np.float32)
    np.testing.assert_array_equal(out, want)
    reached = dist[:, 0] <= step
    np.testing.assert_array_equal(out[reached], targets[reached])
    moved = np.linalg.norm(out.astype(np.float64) - o, axis=1)
    assert np.all(moved <= step * (1 + 1e-5) + 1e-5 * np.abs(o).max(initial=0))


def test_steer_errors():
    z = np.zeros((2, 3), np.float32)
    for step in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step must be positive"):
            core.steer(z, z, step)
    with pytest.raises(ValueError, match=r"targets must have the shape of origins \(2, 3\)"):
        core.steer(z, np.zeros((2, 4)), 1.0)
    with pytest.raises(ValueError, match=r"origins must have shape \(B, d\)"):
        core.steer(np.zeros(3), np.zeros(3), 1.0)
    bad = z.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="targets must be finite"):
        core.steer(z, bad, 1.0)


GENERATORS = {
    "box": lambda center, n, seed, offset=0: core.random_uniform_box(center, 0.5, n, seed, offset),
    "ball": lambda center, n, seed, offset=0: core.random_uniform_ball(center, 0.5, n, seed, offset),
    "normal": lambda center, n, seed, offset=0: core.random_normal(n, len(center), seed, offset),
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_rng_is_counter_based(kind):
    gen = GENERATORS[kind]
    center = np.linspace(-3, 3, 7).astype(np.float32)
    whole = gen(center, 100, 42)
    assert whole.shape == (100, 7) and whole.dtype == np.float32
    # Batches with offsets reproduce the single call; thread count does not matter.
    parts = np.concatenate([gen(center, 30, 42, 0), gen(center, 1, 42, 30), gen(center, 69, 42, 31)])
    np.testing.assert_array_equal(parts, whole)
    many = gen(center, 30_000, 42)  # large enough to be split across the pool's threads
    np.testing.assert_array_equal(many[:100], whole)
    for k in (1, 3):
        core.set_num_threads(k)
        np.testing.assert_array_equal(gen(center, 30_000, 42), many)
    core.set_num_threads(0)
    assert not np.array_equal(gen(center, 100, 43), whole)
    assert gen(center, 0, 1).shape == (0, 7)
    big = gen(center, 100, 42, offset=2**40)
    assert np.all(np.isfinite(big)) and not np.array_equal(big, whole)


def test_rng_distributions():
    d, n = 4, 40000
    center = np.array([10.0, -5.0, 0.0, 1.0], np.float32)
    box = core.random_uniform_box(center, 2.0, n, 1)
    assert np.all(np.abs(box - center) <= 2.0)
    np.testing.assert_allclose(box.mean(0), center, atol=0.05)
    np.testing.assert_allclose(box.var(0), 4.0 / 3.0, rtol=0.05)  # uniform on [-2, 2]
    ball = core.random_uniform_ball(center, 3.0, n, 2)
    r = np.linalg.norm(ball.astype(np.float64) - center, axis=1)
    assert r.max() <= 3.0 * (1 + 1e-6)
    # Uniform in a d-ball: P(r <= s * R) = s^d.
    for s in (0.5, 0.8, 0.95):
        assert abs(np.mean(r <= 3.0 * s) - s**d) < 0.01
    np.testing.assert_allclose(ball.mean(0), center, atol=0.05)
    z = core.random_normal(n, d, 3).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0, atol=0.03)
    np.testing.assert_allclose(z.std(0), 1, atol=0.03)
    assert abs(np.mean(np.abs(z) < 1.959964) - 0.95) < 0.01
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.03


def test_rng_errors():
    c = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="half_width must be positive"):
        core.random_uniform_box(c, 0.0, 5, 0)
    with pytest.raises(ValueError, match="radius must be positive"):
        core.random_uniform_ball(c, -1.0, 5, 0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        core.random_uniform_ball(c, 1.0, -1, 0)
    with pytest.raises(ValueError, match=r"center must have shape \(d,\)"):
        core.random_uniform_box(np.zeros((1, 3)), 1.0, 5, 0)
    with pytest.raises(ValueError, match="center must be finite"):
        core.random_uniform_box(np.array([0.0, np.nan]), 1.0, 5, 0)
    with pytest.raises(ValueError, match="d must be positive"):
        core.random_normal(5, 0, 0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        core.random_normal(-5, 2, 0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        core.set_num_threads(-1)


# Random123's tests/kat_vectors (DEShawResearch/random123, commit 9545ff6), its three "philox4x32 10" lines:
# counter (4 words), key (2 words), expected output (4 words).
PHILOX4X32_10_KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff),
     (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX4X32_10_KAT)
def test_philox4x32_10_known_answers(counter, key, expected):
    """The core's block: counter (draw lo, draw hi, coordinate, stream tag), key = the 64-bit seed."""
    from egbas_fast import _core

    seed, draw = key[0] | key[1] << 32, counter[0] | counter[1] << 32
    assert _core._philox4x32(seed, draw, counter[2], counter[3]) == expected


def test_public_draws_are_built_from_the_philox_stream():
    """random_uniform_box(0, 1) element (i, j) is 2u - 1 with u the 53-bit uniform of block (seed, i, j, tag 0)."""
    from egbas_fast import _core

    seed = 0xA4093822299F31D0
    box = core.random_uniform_box(np.zeros(5, np.float32), 1.0, 4, seed)
    for i in range(4):
        for j in range(5):
            v = _core._philox4x32(seed, i, j, 0)
            u = ((v[0] << 21) ^ (v[1] >> 11)) * 2.0**-53
            assert box[i, j] == np.float32(2 * u - 1)
