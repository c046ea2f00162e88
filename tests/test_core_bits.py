"""pack_signs / mismatch_count against numpy oracles."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egbas_fast import core


def pack_oracle(values, threshold=0.0):
    """(B, n) -> (B, ceil(n/64)) uint64 with unit i at bit i % 64 of word i // 64."""
    B, n = values.shape
    W = -(-n // 64)
    bits = np.zeros((B, W * 64), dtype=np.uint8)
    bits[:, :n] = values > threshold
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    return (bits.reshape(B, W, 64).astype(np.uint64) * weights).sum(axis=2, dtype=np.uint64)


def mismatch_oracle(bits, ref, mask):
    return np.bitwise_count((bits ^ ref) & mask).sum(axis=1).astype(np.int32)


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 127, 128, 129, 1000, 4097])
def test_pack_signs_matches_oracle(isa, n):
    rng = np.random.default_rng(n)
    values = rng.standard_normal((7, n)).astype(np.float32)
    values[:, ::5] = 0.0  # exactly at the threshold: bit must be 0 (strict >)
    np.testing.assert_array_equal(core.pack_signs(values), pack_oracle(values))
    np.testing.assert_array_equal(core.pack_signs(values, 0.3), pack_oracle(values, 0.3))


def test_pack_signs_bit_layout_and_padding():
    values = np.full((1, 70), -1.0, np.float32)
    values[0, [0, 3, 64, 69]] = 1.0
    bits = core.pack_signs(values)
    assert bits.dtype == np.uint64 and bits.shape == (1, 2)
    assert int(bits[0, 0]) == (1 << 0) | (1 << 3)
    assert int(bits[0, 1]) == (1 << 0) | (1 << 5)  # bits 70..127 are padding: zero
    values[:] = np.inf
    assert int(core.pack_signs(values)[0, 1]) == (1 << 6) - 1


@settings(max_examples=40, deadline=None)
@given(B=st.integers(0, 9), n=st.integers(1, 300), thr=st.floats(-1, 1, width=32), seed=st.integers(0, 2**32 - 1))
def test_pack_and_mismatch_property(B, n, thr, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((B, n)).astype(np.float32)
    bits = core.pack_signs(values, thr)
    np.testing.assert_array_equal(bits, pack_oracle(values, thr))
    ref = pack_oracle(rng.standard_normal((1, n)).astype(np.float32))[0]
    mask = rng.integers(0, 2**63, size=ref.shape, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    np.testing.assert_array_equal(core.mismatch_count(bits, ref, mask), mismatch_oracle(bits, ref, mask))


def test_mismatch_count_matches_oracle(isa):
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**64, size=(33, 17), dtype=np.uint64)
    ref = rng.integers(0, 2**64, size=17, dtype=np.uint64)
    mask = rng.integers(0, 2**64, size=17, dtype=np.uint64)
    out = core.mismatch_count(bits, ref, mask)
    assert out.dtype == np.int32 and out.shape == (33,)
    np.testing.assert_array_equal(out, mismatch_oracle(bits, ref, mask))
    full = np.full(17, np.uint64(2**64 - 1))
    np.testing.assert_array_equal(core.mismatch_count(bits, bits[0], full)[0], 0)
    np.testing.assert_array_equal(core.mismatch_count(bits[:1], ~bits[0], full), [17 * 64])


def test_bits_conversions_and_threads():
    rng = np.random.default_rng(2)
    values = rng.standard_normal((300, 2000))
    expect = pack_oracle(values.astype(np.float32))
    np.testing.assert_array_equal(core.pack_signs(values), expect)  # float64 -> float32
    np.testing.assert_array_equal(core.pack_signs(values.T.copy().T.astype(np.float32)), expect)  # F-order
    np.testing.assert_array_equal(core.pack_signs(values[:, ::2]), pack_oracle(values[:, ::2].astype(np.float32)))
    for k in (1, 2, 3):
        core.set_num_threads(k)
        assert core.get_num_threads() == k
        np.testing.assert_array_equal(core.pack_signs(values), expect)
    core.set_num_threads(0)
    assert core.get_num_threads() >= 1
    as_int64 = expect.view(np.int64)
    np.testing.assert_array_equal(core.mismatch_count(as_int64, as_int64[0], as_int64[1]),
                                  mismatch_oracle(expect, expect[0], expect[1]))


def test_bits_errors():
    with pytest.raises(ValueError, match=r"values must have shape \(B, n\)"):
        core.pack_signs(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="values"):
        core.pack_signs(np.array([["a"]]))
    with pytest.raises(ValueError, match="NaN"):
        core.pack_signs(np.array([[0.0, np.nan]], np.float32))
    with pytest.raises(ValueError, match="threshold"):
        core.pack_signs(np.zeros((1, 3), np.float32), float("nan"))
    bits = np.zeros((2, 3), np.uint64)
    with pytest.raises(ValueError, match="ref must have shape"):
        core.mismatch_count(bits, np.zeros(4, np.uint64), np.zeros(3, np.uint64))
    with pytest.raises(ValueError, match="mask must have shape"):
        core.mismatch_count(bits, np.zeros(3, np.uint64), np.zeros((3, 1), np.uint64))
    with pytest.raises(TypeError, match="bits"):
        core.mismatch_count(bits.astype(np.float32), np.zeros(3, np.uint64), np.zeros(3, np.uint64))
