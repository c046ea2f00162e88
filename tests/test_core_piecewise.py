"""core.PiecewiseHMC (exact HMC through an affine -> (Leaky)ReLU -> affine region) against the numpy oracle."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egbas_fast import _core, core
from egbas_fast.sampling import HMC_TIME, PiecewiseAffine

from .piecewise_oracle import Piece, trajectory


def random_region(rng, m, d, k, slope, density):
    """A random region {z : L act(A z + c) + e > 0} with a random start z0 inside (every value in [0.3, 2])."""
    A = rng.standard_normal((m, d))
    c = rng.standard_normal(m) * 0.5
    L = rng.standard_normal((k, m)) * (rng.random((k, m)) < density)
    z0 = rng.standard_normal(d) * 0.5
    p0 = A @ z0 + c
    e = rng.uniform(0.3, 2.0, k) - np.where(p0 > 0, p0, slope * p0) @ L.T
    w0 = np.where(p0 > 0, 1.0, slope)
    return PiecewiseAffine(A, c, slope, L, e), z0, w0


def oracle_run(pw, pieces, Z, V, travel, max_bounces):
    out = [trajectory(pw, piece, z, v, travel, max_bounces) for piece, z, v in zip(pieces, Z, V)]
    return np.array([e for e, _ in out]), np.array([b for _, b in out])


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), d=st.integers(1, 8), k=st.integers(1, 12), slope=st.sampled_from([0.0, 0.2]),
       density=st.sampled_from([0.2, 1.0]), seed=st.integers(0, 2**32 - 1))
def test_matches_the_numpy_oracle(m, d, k, slope, density, seed):
    """Random shapes: same walls hit and the same end (to rounding) as the numpy oracle, over two consecutive
    calls (the second starts from the pieces the first left), every end inside the region."""
    rng = np.random.default_rng(seed)
    pw, z0, w0 = random_region(rng, m, d, k, slope, density)
    hmc = core.PiecewiseHMC(pw.A, pw.c, slope, pw.L, pw.e, w0)
    assert hmc.shape == (m, d, k) and hmc.nonzeros == np.count_nonzero(pw.L)
    C = 4
    pieces = [Piece(pw, w0) for _ in range(C)]
    Z = np.repeat(z0[None], C, 0)
    for _ in range(2):
        V = rng.standard_normal((C, d))
        Z_in, V_in = Z.copy(), V.copy()
        got, bounces, _ = hmc.run(Z, V, HMC_TIME, 200)
        np.testing.assert_array_equal(Z, Z_in)  # inputs untouched
        np.testing.assert_array_equal(V, V_in)
        want, want_bounces = oracle_run(pw, pieces, Z, V, HMC_TIME, 200)
        np.testing.assert_array_equal(bounces, want_bounces)
        done = bounces >= 0
        np.testing.assert_allclose(got[done], want[done], rtol=0, atol=1e-9 * (1 + np.abs(want[done]).max(initial=0)))
        assert (pw.values(got[done]) > -1e-9).all()
        Z = np.where(done[:, None], got, Z)


def test_walls_are_hit_and_energy_is_kept(isa):
    """A region with walls close to the start: trajectories bounce (tens of walls), |z|^2 + |v|^2 is conserved by
    reflection and free motion alike (checked through the end state's radius being reachable), and every
    instruction set gives the same bits."""
    rng = np.random.default_rng(3)
    pw, z0, w0 = random_region(rng, 60, 6, 30, 0.0, 0.5)
    pw.e = pw.e - (pw.values(z0[None])[0] - 0.05)  # every selected value 0.05 at the start: walls all around
    V = rng.standard_normal((8, 6))
    Z = np.repeat(z0[None], 8, 0)
    end, bounces, _ = core.PiecewiseHMC(pw.A, pw.c, 0.0, pw.L, pw.e, w0).run(Z, V, HMC_TIME, 2000)
    assert (bounces > 3).all()
    assert (pw.values(end) > -1e-9).all()
    # energy: the free motion keeps |z|^2 + |v|^2 and reflections keep |v|: |end| <= sqrt(|z0|^2 + |v|^2)
    assert (np.linalg.norm(end, axis=1) <= np.sqrt(z0 @ z0 + (V * V).sum(1)) + 1e-9).all()
    _core._limit_isa("scalar")
    again = core.PiecewiseHMC(pw.A, pw.c, 0.0, pw.L, pw.e, w0).run(Z, V, HMC_TIME, 2000)[0]
    np.testing.assert_array_equal(end, again)


def test_recorded_positions_are_the_trajectory_at_those_times():
    """path[:, i] (record = 8) is where a trajectory of travel (i + 1) / 8 from the same start and velocity ends
    (the same flow, stopped earlier), inside the region; the last one is the end."""
    rng = np.random.default_rng(7)
    pw, z0, w0 = random_region(rng, 60, 6, 30, 0.2, 0.5)
    pw.e = pw.e - (pw.values(z0[None])[0] - 0.1)  # walls close to the start: most recorded positions follow bounces
    Z, V = np.repeat(z0[None], 6, 0), rng.standard_normal((6, 6))
    end, bounces, path = core.PiecewiseHMC(pw.A, pw.c, 0.2, pw.L, pw.e, w0).run(Z, V, HMC_TIME, 2000, 8)
    assert path.shape == (6, 8, 6) and (bounces > 0).all()
    np.testing.assert_array_equal(path[:, -1], end)
    for i in range(8):
        stopped = core.PiecewiseHMC(pw.A, pw.c, 0.2, pw.L, pw.e, w0).run(Z, V, HMC_TIME * (i + 1) / 8, 2000)[0]
        np.testing.assert_allclose(path[:, i], stopped, rtol=0, atol=1e-9)
    assert (pw.values(path.reshape(-1, 6)) > -1e-9).all()
    assert core.PiecewiseHMC(pw.A, pw.c, 0.2, pw.L, pw.e, w0).run(Z, V, HMC_TIME, 2000)[2].shape == (6, 0, 6)


def test_thread_count_does_not_change_the_result():
    rng = np.random.default_rng(5)
    pw, z0, w0 = random_region(rng, 200, 10, 50, 0.1, 0.3)
    Z, V = np.repeat(z0[None], 16, 0), rng.standard_normal((16, 10))
    results = []
    for threads in (1, 2):
        core.set_num_threads(threads)
        try:
            results.append(core.PiecewiseHMC(pw.A, pw.c, 0.1, pw.L, pw.e, w0).run(Z, V, HMC_TIME, 2000, 8))
        finally:
            core.set_num_threads(0)
    for got, want in zip(results[0], results[1]):
        np.testing.assert_array_equal(got, want)


def test_max_bounces_gives_up_like_the_oracle():
    rng = np.random.default_rng(3)
    pw, z0, w0 = random_region(rng, 60, 6, 30, 0.0, 0.5)
    pw.e = pw.e - (pw.values(z0[None])[0] - 0.05)
    Z, V = np.repeat(z0[None], 6, 0), rng.standard_normal((6, 6))
    bounces = core.PiecewiseHMC(pw.A, pw.c, 0.0, pw.L, pw.e, w0).run(Z, V, HMC_TIME, 3)[1]
    _, want = oracle_run(pw, [Piece(pw, w0) for _ in range(6)], Z, V, HMC_TIME, 3)
    np.testing.assert_array_equal(bounces, want)
    assert (bounces == -1).any()


def test_bad_input_is_refused():
    rng = np.random.default_rng(0)
    pw, z0, w0 = random_region(rng, 5, 3, 4, 0.0, 1.0)
    args = dict(A=pw.A, c=pw.c, slope=0.0, L=pw.L, e=pw.e, w0=w0)
    bad = [
        (dict(A=pw.A[0]), "A must have shape"), (dict(c=pw.c[:-1]), "c must have shape"),
        (dict(L=pw.L[:, :-1]), "L must have shape"), (dict(L=pw.L[:0]), "at least one row"),
        (dict(e=pw.e[:-1]), "e must have shape"), (dict(slope=-0.1), "slope"), (dict(w0=w0 * 0 + 0.5), "w0"),
        (dict(A=np.full_like(pw.A, np.nan)), "A must be finite"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            core.PiecewiseHMC(**{**args, **change})
    with pytest.raises(TypeError):
        core.PiecewiseHMC(**{**args, "A": pw.A.astype(complex)})
    hmc = core.PiecewiseHMC(**args)
    Z, V = z0[None], rng.standard_normal((1, 3))
    with pytest.raises(ValueError, match="record"):
        hmc.run(Z, V, 1.0, 10, -1)
    for z, v, travel, bounces, message in [(Z[:, :2], V, 1.0, 10, "z must have shape"), (Z, V[:, :2], 1.0, 10, "v must"),
                                           (Z, V, 0.0, 10, "travel"), (Z, V, np.inf, 10, "travel"),
                                           (Z, V, 1.0, 0, "max_bounces"), (Z * np.nan, V, 1.0, 10, "z must be finite")]:
        with pytest.raises(ValueError, match=message):
            hmc.run(z, v, travel, bounces)
