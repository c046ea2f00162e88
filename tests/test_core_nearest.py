"""core.nearest and core.Tree against the float64 numpy oracle (ties to the lowest index)."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egbas_fast import core


def oracle(points, queries):
    """numpy argmin of the float64 squared distances (first index on ties) and that distance."""
    P64 = np.asarray(points, np.float32).astype(np.float64)
    idx = np.empty(len(queries), np.int64)
    dist = np.empty(len(queries), np.float32)
    for b, q in enumerate(np.asarray(queries, np.float32).astype(np.float64)):
        d2 = ((P64 - q) ** 2).sum(1)
        idx[b] = np.argmin(d2)
        dist[b] = d2[idx[b]]
    return idx, dist


def assert_exact(points, queries):
    idx, dist = core.nearest(points, queries)
    want_idx, want_dist = oracle(points, queries)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(dist, want_dist)


@settings(max_examples=60, deadline=None)
@given(d=st.integers(0, 700), scale=st.sampled_from([1e-3, 1.0, 30.0]), seed=st.integers(0, 2**32 - 1))
def test_recheck_sums_in_numpy_order(d, scale, seed):
    """The exact re-check reproduces numpy's float64 pairwise sum bit for bit (not just to
    float32), so exact ties and 1-ulp differences resolve as in the oracle."""
    from egbas_fast import _core

    rng = np.random.default_rng(seed)
    p, q = (rng.standard_normal((2, d)) * scale).astype(np.float32)
    assert _core._numpy_sq_dist(p, q) == ((p.astype(np.float64) - q.astype(np.float64)) ** 2).sum()


def tight_cloud(rng, n, d, norm, spread):
    """n points in a cloud of size `spread` around a centre of norm `norm` (an RRT tree)."""
    centre = rng.standard_normal(d)
    centre *= norm / np.linalg.norm(centre)
    steps = rng.standard_normal((n, d)) * spread / np.sqrt(d)
    return (centre + np.cumsum(steps, axis=0) / np.sqrt(np.arange(1, n + 1))[:, None]).astype(np.float32), centre


@pytest.mark.parametrize("N,d,B", [(1, 1, 1), (7, 3, 5), (100, 600, 33), (3000, 599, 9), (5000, 17, 70),
                                   (50000, 8, 3), (1000, 128, 257)])
def test_random_gaussian(isa, N, d, B):  # noqa: F811
    rng = np.random.default_rng(N + d + B)
    assert_exact(rng.standard_normal((N, d)).astype(np.float32), rng.standard_normal((B, d)).astype(np.float32))


@pytest.mark.parametrize("norm", [10.0, 30.0, 300.0])
@pytest.mark.parametrize("spread", [1e-4, 1e-2, 1e-1])
def test_tight_cloud_far_from_origin(isa, norm, spread):  # noqa: F811
    """The RRT case: nodes a few steps apart around a query of norm 10-300."""
    rng = np.random.default_rng(int(norm * 7 + 1 / spread))
    d = 64
    points, centre = tight_cloud(rng, 3000, d, norm, spread)
    near = (points[rng.integers(0, len(points), 40)] + rng.standard_normal((40, d)) * spread / 10).astype(np.float32)
    wide = (centre + rng.standard_normal((40, d)) * spread * 3).astype(np.float32)
    assert_exact(points, np.concatenate([near, wide, points[:5]]))


def test_duplicates_and_exact_ties(isa):  # noqa: F811
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 9)).astype(np.float32)
    points = np.concatenate([base, base, base[::-1]])  # every point three times
    assert_exact(points, np.concatenate([base, rng.standard_normal((40, 9)).astype(np.float32)]))
    # Symmetric points: exact ties at equal distance, the lower index must win.
    e = np.eye(5, dtype=np.float32)
    sym = np.concatenate([e, -e, 2 * e])
    idx, dist = core.nearest(sym, np.zeros((3, 5), np.float32))
    np.testing.assert_array_equal(idx, [0, 0, 0])
    np.testing.assert_array_equal(dist, [1, 1, 1])
    # All points equal: index 0.
    same = np.full((1000, 4), 12.5, np.float32)
    assert core.nearest(same, same[:3] + 1)[0].tolist() == [0, 0, 0]


def test_near_ties_below_float32_resolution(isa):  # noqa: F811
    """Distances that differ only in float64 (the float32 expansion cannot separate them)."""
    rng = np.random.default_rng(4)
    d = 32
    q = (rng.standard_normal(d) * 20).astype(np.float32)
    points = np.repeat(q[None], 400, 0)
    for i in range(400):  # one coordinate nudged by 1..4 ulps, in both directions
        j = i % d
        x = points[i, j]
        for _ in range(1 + i % 4):
            x = np.nextafter(x, np.float32(np.inf if i % 2 else -np.inf))
        points[i, j] = x
    assert_exact(points, q[None])
    assert_exact(points, points[::37])


def ring(rng, d, n, centre_norm, r, R, theta=0.7):
    """n points at one angle theta on a sphere of radius r around a far centre c, and a query
    at distance R from c along the axis: mathematically every point ties, and only float32
    rounding of the points separates them. A filter without its error guard fails here."""
    c = rng.standard_normal(d)
    c *= centre_norm / np.linalg.norm(c)
    e = rng.standard_normal(d)
    e /= np.linalg.norm(e)
    w = rng.standard_normal((n, d))
    w -= np.outer(w @ e, e)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    points = (c + r * (np.cos(theta) * e + np.sin(theta) * w)).astype(np.float32)
    return points, (c + R * e).astype(np.float32)[None]


@pytest.mark.parametrize("d", [8, 64, 300])
def test_rounding_separated_ties(isa, d):  # noqa: F811
    rng = np.random.default_rng(d)
    for _ in range(15):
        points, query = ring(rng, d, 500, 20.0, 1.0, 30.0)
        assert_exact(points, query)
        tree = core.Tree(d)
        tree.add(points, np.full(len(points), -1))
        np.testing.assert_array_equal(tree.nearest(query)[0], oracle(points, query)[0])


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 700), d=st.integers(1, 40), B=st.integers(0, 70), scale=st.sampled_from([1e-3, 1.0, 30.0]),
       offset=st.sampled_from([0.0, 25.0]), seed=st.integers(0, 2**32 - 1))
def test_nearest_property(N, d, B, scale, offset, seed):
    rng = np.random.default_rng(seed)
    points = (offset + scale * rng.standard_normal((N, d))).astype(np.float32)
    if N > 3:
        points[rng.integers(0, N, N // 3)] = points[0]  # duplicates
    queries = (offset + scale * rng.standard_normal((B, d))).astype(np.float32)
    assert_exact(points, np.concatenate([queries, points[: min(N, 3)]]))


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 400), d=st.integers(1, 20), B=st.integers(0, 30), distinct=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))
def test_nearest_property_mostly_copies(N, d, B, distinct, seed):
    """Points drawn from a few distinct rows (with +0.0 / -0.0 variants, equal but not bit-identical): the
    copies are dropped before the search, and the answer is still the first of the tied rows."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(-2, 3, size=(distinct, d)).astype(np.float32)
    points = pool[rng.integers(0, distinct, N)]
    points[rng.random(points.shape) < 0.2] *= -1  # 0.0 -> -0.0 in some copies
    queries = np.concatenate([rng.integers(-2, 3, size=(B, d)).astype(np.float32) + 0.5, pool])
    assert_exact(points, queries)


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 300), d=st.integers(1, 20), B=st.integers(1, 30), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       in_points=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_nearest_rejects_one_non_finite_value_anywhere(N, d, B, bad, in_points, seed):
    rng = np.random.default_rng(seed)
    points, queries = rng.standard_normal((N, d)).astype(np.float32), rng.standard_normal((B, d)).astype(np.float32)
    target = points if in_points else queries
    row, col = rng.integers(0, len(target)), rng.integers(0, d)
    target[row, col] = bad
    name = "points" if in_points else "queries"
    with pytest.raises(ValueError, match=rf"{name} must be finite \(row {row}\)"):
        core.nearest(points, queries)


def test_twenty_thousand_identical_points():
    """The tie case that used to keep every point as a candidate of every query (~107 MB, 60x the time of random
    points): copies are dropped first; bench/bench_core.py measures the time and memory against random points."""
    rng = np.random.default_rng(12)
    points = np.repeat(rng.standard_normal((1, 128)).astype(np.float32), 20000, 0)
    queries = rng.standard_normal((256, 128)).astype(np.float32)
    idx, dist = core.nearest(points, queries)
    assert (idx == 0).all()
    np.testing.assert_array_equal(dist, oracle(points[:1], queries)[1])
    points[rng.integers(1, 20000, 5000)] = rng.standard_normal((5000, 128)).astype(np.float32)  # copies among others
    assert_exact(points, np.concatenate([queries[:20], points[[0, 7, 19999]]]))


def test_many_points_at_exactly_equal_distance(isa):  # noqa: F811
    """More tied candidates than a query keeps (256): the list is compacted by exact re-checks, the answer stays
    the lowest index. Distinct points (+-e_i, all at distance 1 from the origin) and a Tree of copies of one node
    (a Tree does not drop copies)."""
    d = 300
    e = np.eye(d, dtype=np.float32)
    points = np.concatenate([-e, e])
    queries = np.concatenate([np.zeros((3, d), np.float32), 0.5 * e[:4]])
    assert_exact(points, queries)
    assert core.nearest(points, queries[:1])[0].tolist() == [0]
    tree = core.Tree(8)
    node = np.full((1, 8), 0.25, np.float32)
    tree.add(np.repeat(node, 3000, 0), np.full(3000, -1))
    q = np.random.default_rng(14).standard_normal((40, 8)).astype(np.float32)
    idx, dist = tree.nearest(q)
    assert (idx == 0).all()
    np.testing.assert_array_equal(dist, oracle(node, q)[1])


@pytest.mark.parametrize("scale", [1e-20, 1e-42, 1e12])
def test_extreme_magnitudes(scale):
    """Subnormal squares (the float32 filter sees zeros) and large values stay exact."""
    rng = np.random.default_rng(11)
    points = (rng.standard_normal((2000, 7)) * scale).astype(np.float32)
    assert_exact(points, (rng.standard_normal((30, 7)) * scale).astype(np.float32))


def test_integer_grid_ties():
    """Integer points: many exactly equal distances."""
    rng = np.random.default_rng(5)
    points = rng.integers(-2, 3, size=(3000, 6)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(200, 6)).astype(np.float32) + 0.5
    assert_exact(points, queries)


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(6)
    points, _ = tight_cloud(rng, 20000, 24, 20.0, 1e-3)
    queries = points[rng.integers(0, len(points), 300)] + np.float32(1e-5)
    results = []
    for k in (1, 2, 3, 5):
        core.set_num_threads(k)
        results.append(core.nearest(points, queries))
    core.set_num_threads(0)
    for idx, dist in results[1:]:
        np.testing.assert_array_equal(idx, results[0][0])
        np.testing.assert_array_equal(dist, results[0][1])
    np.testing.assert_array_equal(results[0][0], oracle(points, queries)[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+ warns about fork with threads alive
def test_a_forked_child_runs_the_core_on_threads_of_its_own():
    """The parent's pool workers do not exist in a forked child: the child must start its own (not hang on the
    parent's, nor fall back to one thread) and still give the exact answers."""
    from egbas_fast import _core

    rng = np.random.default_rng(13)
    points, queries = rng.standard_normal((3000, 16)).astype(np.float32), rng.standard_normal((50, 16)).astype(np.float32)
    core.set_num_threads(2)
    try:
        assert _core._pool_threads(8, 50_000) == 2  # 8 chunks sleeping 50 ms: both threads take some
        pid = os.fork()
        if pid == 0:
            try:
                ok = _core._pool_threads(8, 50_000) == 2
                ok = ok and np.array_equal(core.nearest(points, queries)[0], oracle(points, queries)[0])
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        core.set_num_threads(0)


def test_conversions():
    rng = np.random.default_rng(7)
    points = rng.standard_normal((300, 10))  # float64 -> float32
    queries = np.asfortranarray(rng.standard_normal((20, 10)))
    idx, dist = core.nearest(points, queries)
    want = oracle(points.astype(np.float32), queries.astype(np.float32))
    np.testing.assert_array_equal(idx, want[0])
    np.testing.assert_array_equal(core.nearest(points[::2], queries[:, :])[0], oracle(points[::2], queries)[0])
    assert core.nearest(points, queries[:0])[0].shape == (0,)


def test_many_queries_in_slabs():
    rng = np.random.default_rng(10)
    points = rng.standard_normal((50, 3)).astype(np.float32)
    queries = rng.standard_normal((8192 * 2 + 5, 3)).astype(np.float32)
    assert_exact(points, queries)
    queries[9000, 1] = np.inf
    with pytest.raises(ValueError, match=r"queries must be finite \(row 9000\)"):
        core.nearest(points, queries)


def test_nearest_errors():
    P = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"points must have shape \(N, d\)"):
        core.nearest(np.zeros(3, np.float32), P)
    with pytest.raises(ValueError, match=r"queries must have shape \(B, d\) with d = 3"):
        core.nearest(P, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="at least one row"):
        core.nearest(np.zeros((0, 3), np.float32), P)
    with pytest.raises(ValueError, match="at least one column"):
        core.nearest(np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32))
    bad = P.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"points must be finite \(row 2\)"):
        core.nearest(bad, P)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"queries must be finite \(row 2\)"):
        core.nearest(P, bad)
    with pytest.raises(ValueError, match="too large"):
        core.nearest(np.full((2, 3), 1e18, np.float32), P)
    with pytest.raises(TypeError, match="points"):
        core.nearest(P.astype(complex), P)


# ---------------------------------------------------------------- Tree

def test_tree_grows_and_matches_oracle(isa):  # noqa: F811
    rng = np.random.default_rng(8)
    d = 20
    points, _ = tight_cloud(rng, 5000, d, 15.0, 1e-2)
    tree = core.Tree(d, capacity=3)
    added = 0
    for k in [1, 1, 5, 100, 0, 1000, 3893]:
        parents = rng.integers(-1, max(added, 1), k) if added else np.full(k, -1)
        idx = tree.add(points[added:added + k], parents)
        np.testing.assert_array_equal(idx, np.arange(added, added + k))
        added += k
        assert tree.size == len(tree) == added and tree.capacity >= added
        np.testing.assert_array_equal(tree.points, points[:added])
        queries = points[rng.integers(0, added, 37)] + rng.standard_normal((37, d)).astype(np.float32) * 1e-3
        got = tree.nearest(queries)
        want = oracle(points[:added], queries)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_tree_views_and_parents():
    tree = core.Tree(2, capacity=1)
    tree.add([[1.0, 2.0]], [-1])
    view = tree.points
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0] = 5
    tree.add([[3.0, 4.0], [5.0, 6.0]], [0, 1])  # regrows: the old view must stay valid
    np.testing.assert_array_equal(view, [[1, 2]])
    np.testing.assert_array_equal(tree.points, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(tree.parents, [-1, 0, 1])
    assert tree.parents.dtype == np.int64 and tree.dim == 2
    del tree
    np.testing.assert_array_equal(view, [[1, 2]])  # the view owns its buffer


def test_tree_add_its_own_points():
    """Adding the tree's own view (no copy) is safe across a regrowth."""
    tree = core.Tree(3, capacity=4)
    tree.add(np.arange(12, dtype=np.float32).reshape(4, 3), [-1, 0, 1, 2])
    tree.add(tree.points, np.arange(4))  # grows: reads the old buffer while writing the new
    np.testing.assert_array_equal(tree.points[4:], tree.points[:4])
    np.testing.assert_array_equal(tree.parents, [-1, 0, 1, 2, 0, 1, 2, 3])
    assert repr(tree) == "Tree(dim=3, size=8, capacity=8)"


def test_tree_errors_leave_tree_unchanged():
    tree = core.Tree(3)
    with pytest.raises(ValueError, match="empty"):
        tree.nearest(np.zeros((1, 3), np.float32))
    tree.add(np.zeros((2, 3), np.float32), [-1, 0])
    for pts, parents, match in [
        (np.zeros((2, 4)), [0, 0], r"points must have shape \(k, dim\) with d = 3"),
        (np.zeros((2, 3)), [0], r"parents must have shape \(k,\) = \(2,\)"),
        (np.zeros((2, 3)), [0, 3], r"parents\[1\] = 3 must be -1 or the index of an earlier node \(< 3\)"),
        (np.zeros((1, 3)), [-2], r"parents\[0\] = -2"),
        (np.array([[0, 0, np.nan]]), [0], r"points must be finite \(row 0\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            tree.add(pts, parents)
    with pytest.raises(TypeError, match="parents must have an integer dtype"):
        tree.add(np.zeros((1, 3)), [0.5])
    assert tree.add(np.zeros((0, 3)), []).shape == (0,)  # empty list: float64 but empty, fine
    assert tree.size == 2
    np.testing.assert_array_equal(tree.parents, [-1, 0])
    with pytest.raises(ValueError, match=r"queries must have shape \(B, dim\)"):
        tree.nearest(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="dim must be positive"):
        core.Tree(0)
    with pytest.raises(ValueError, match="capacity must be positive"):
        core.Tree(3, capacity=0)


def test_concurrent_calls_and_errors_in_worker_threads():
    """Python threads share the core (GIL released): same answers as serial calls; an error
    raised inside a parallel chunk reaches Python as ValueError and the pool keeps working."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(9)
    points = rng.standard_normal((20000, 32)).astype(np.float32)
    batches = [rng.standard_normal((100, 32)).astype(np.float32) for _ in range(6)]
    serial = [core.nearest(points, q)[0] for q in batches]
    tree = core.Tree(32)
    tree.add(points, np.full(len(points), -1))
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda q: core.nearest(points, q)[0], batches))
        got_tree = list(pool.map(lambda q: tree.nearest(q)[0], batches))
    for s, g, t in zip(serial, got, got_tree):
        np.testing.assert_array_equal(g, s)
        np.testing.assert_array_equal(t, s)
    bad = points.copy()
    bad[-7, 3] = np.nan  # found by a worker thread in pass 1
    with pytest.raises(ValueError, match=rf"points must be finite \(row {len(points) - 7}\)"):
        core.nearest(bad, batches[0])
    np.testing.assert_array_equal(core.nearest(points, batches[0])[0], serial[0])


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 64), sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
       capacity=st.integers(1, 50), spread=st.sampled_from([1e-4, 1e-2, 1.0]), seed=st.integers(0, 2**32 - 1))
def test_tree_property(d, sizes, capacity, spread, seed):
    """Random add sequences: indices, parents, points and exact nearest always match numpy."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(d) * 20
    tree = core.Tree(d, capacity)
    all_points, all_parents = np.zeros((0, d), np.float32), np.zeros(0, np.int64)
    for k in sizes:
        pts = (centre + spread * rng.standard_normal((k, d))).astype(np.float32)
        parents = np.array([rng.integers(-1, len(all_points) + i) for i in range(k)], np.int64)
        np.testing.assert_array_equal(tree.add(pts, parents), np.arange(len(all_points), len(all_points) + k))
        all_points, all_parents = np.concatenate([all_points, pts]), np.concatenate([all_parents, parents])
        np.testing.assert_array_equal(tree.points, all_points)
        np.testing.assert_array_equal(tree.parents, all_parents)
        if len(all_points):
            queries = (centre + spread * rng.standard_normal((rng.integers(1, 40), d))).astype(np.float32)
            idx, dist = tree.nearest(queries)
            want_idx, want_dist = oracle(all_points, queries)
            np.testing.assert_array_equal(idx, want_idx)
            np.testing.assert_array_equal(dist, want_dist)
