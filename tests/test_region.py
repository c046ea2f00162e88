import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from egbas_fast.region import GenerativeRegion
from tests.toys import TOYS, linear_relu, polytope_exit, reference_values


def _points(query, n, rng):
    """n latents around `query` at radii from 1e-3 to 3: both inside and outside for every toy. (n, d) float32."""
    d = query.size
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = 10 ** rng.uniform(-3, 0.5, size=(n, 1))
    return (query.reshape(1, d) + r * u).astype(np.float32)


def _oracle_mismatches(toy, model, layer, query, Z, units, threshold):
    shape = toy.query_shape
    on = reference_values(toy.name, model, layer, torch.from_numpy(Z).view(-1, *shape)) > threshold
    ref = reference_values(toy.name, model, layer, torch.from_numpy(query.copy()).view(1, *shape))[0] > threshold
    units = torch.from_numpy(np.array(units))
    return (on[:, units] != ref[units]).sum(1).numpy()


@pytest.mark.parametrize("threshold", [0.0, 0.05])
@pytest.mark.parametrize("toy", TOYS, ids=lambda t: t.name)
def test_membership_equals_plain_torch(toy, threshold):
    rng = np.random.default_rng(0)
    model = toy.build()
    for layer in toy.layers:
        query = rng.standard_normal(toy.query_shape).astype(np.float32)
        region = GenerativeRegion(model, layer, query, threshold=threshold, batch_size=500)  # several chunks
        Z = _points(region.query, 2000, rng)
        for units in (region.units, np.sort(rng.choice(region.n_units, (region.n_units + 1) // 2, replace=False))):
            r = region.restrict(units)
            want = _oracle_mismatches(toy, model, layer, region.query, Z, units, np.float32(threshold))
            got = r.mismatches(Z)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(r.contains(Z), want == 0)
        assert 0 < (want == 0).sum() < len(Z), "the points must straddle the region to test anything"


def _polytope(seed):
    """Linear(3 -> 8) + ReLU: its regions are the cells of 8 planes. Returns model, W, b (float64), query, rng."""
    model = linear_relu(d=3, n=8)
    W = model[0].weight.detach().double().numpy()
    b = model[0].bias.detach().double().numpy()
    rng = np.random.default_rng(seed)
    return model, W, b, rng.standard_normal(3).astype(np.float32), rng


def test_polytope_analytic():
    model, W, b, query, rng = _polytope(seed=1)
    Z = _points(query, 5000, rng)
    pre = Z.astype(np.float64) @ W.T + b  # (n, 8)
    want = ((pre > 0) == (W @ query.astype(np.float64) + b > 0)).all(1)
    clear = (np.abs(pre) > 1e-5).all(1)  # float32 vs float64 may disagree right on a hyperplane
    for layer in ("0", "1"):  # the Linear and its ReLU give the same region
        got = GenerativeRegion(model, layer, query).contains(Z)
        np.testing.assert_array_equal(got[clear], want[clear])
    assert 0 < want.sum() < len(Z)


def test_boundary_distance_is_the_analytic_exit_of_the_polytope():
    model, W, b, query, rng = _polytope(seed=2)
    U = rng.standard_normal((64, 3))
    region = GenerativeRegion(model, "1", query)
    want = polytope_exit(W, b, query, U / np.linalg.norm(U, axis=1, keepdims=True))
    tol = 1e-4
    got = region.boundary_distance(U * 3.7, tol=tol)  # the directions' length does not matter
    finite = np.isfinite(want)
    assert finite.sum() > 10 and (~finite).sum() > 0  # some rays leave, some never do (unbounded polytope)
    np.testing.assert_allclose(got[finite], want[finite], atol=tol / 2 + 1e-5, rtol=0)
    assert np.isinf(got[~finite]).all()
    capped = region.boundary_distance(U, max_distance=0.5, tol=tol)
    np.testing.assert_allclose(capped, np.minimum(want, 0.5), atol=tol / 2 + 1e-5, rtol=0)
    # Fewer boundaries: each ray goes at least as far.
    sub = region.restrict([0, 5]).boundary_distance(U, tol=tol)
    assert (sub >= got - tol).all() and (sub > got + tol).any()


def test_query_unit_exactly_at_threshold_is_off():
    model = linear_relu(d=3, n=5)
    with torch.no_grad():
        model[0].bias[0] = 0.0  # at the query z = 0, unit 0 is exactly 0: off (on means > threshold)
    w0 = model[0].weight[0].detach().numpy()
    query = np.zeros(3, np.float32)
    for layer in ("0", "1"):
        region = GenerativeRegion(model, layer, query, units=[0])
        assert region.contains(query[None]).all()
        t = np.array([[1e-3], [-1e-3], [1.0], [-1.0]], np.float32)
        np.testing.assert_array_equal(region.contains(t * w0), [False, True, False, True])  # +w0 turns it on
        # Every direction that turns unit 0 on exits at once (distance ~0); the others never cross it.
        d = region.boundary_distance(np.stack([w0, -w0]), max_distance=10.0)
        assert d[0] <= 1e-4 and d[1] == 10.0


@pytest.mark.parametrize("toy", TOYS, ids=lambda t: t.name)
def test_query_is_inside_in_any_batch(toy):
    rng = np.random.default_rng(3)
    model = toy.build()
    query = rng.standard_normal(toy.query_shape).astype(np.float32)
    region = GenerativeRegion(model, toy.layers[-1], query, batch_size=512)
    Z = _points(region.query, 700, rng)
    Z[[0, 300, 699]] = region.query
    m = region.mismatches(Z)
    assert (m[[0, 300, 699]] == 0).all() and m.max() > 0


def test_latent_shapes_and_array_types_agree():
    toy = next(t for t in TOYS if t.name == "conv")
    model = toy.build()
    rng = np.random.default_rng(4)
    query = torch.from_numpy(rng.standard_normal((6, 1, 1)).astype(np.float32))
    region = GenerativeRegion(model, "main.5", query)
    assert (region.dim, region.n_units, region.query_shape) == (6, 4 * 8 * 8, (6, 1, 1))
    assert region.query.dtype == np.float32 and region.query.shape == (6,)
    assert region.units.dtype == np.int64 and np.array_equal(region.units, np.arange(256))
    assert region.device == torch.device("cpu")
    Z = _points(region.query, 300, rng)
    m = region.mismatches(Z)
    assert m.shape == (300,) and m.max() > 0
    np.testing.assert_array_equal(region.mismatches(Z.reshape(300, 6, 1, 1)), m)
    np.testing.assert_array_equal(region.mismatches(torch.from_numpy(Z)), m)
    np.testing.assert_array_equal(region.mismatches(Z.astype(np.float64)), m)
    np.testing.assert_array_equal(region.mismatches(np.asfortranarray(Z)), m)
    assert region.mismatches(np.zeros((0, 6), np.float32)).shape == (0,)


def test_float64_model():
    model = linear_relu(d=3, n=8).double()
    query = np.array([0.1, -0.2, 0.3])
    region = GenerativeRegion(model, "0", query)
    Z = _points(region.query, 2000, np.random.default_rng(5))
    with torch.no_grad():
        pre = model[0](torch.from_numpy(Z).double()).numpy()
        ref = model[0](torch.tensor(region.query[None]).double()).numpy()[0]
    np.testing.assert_array_equal(region.contains(Z), ((pre > 0) == (ref > 0)).all(1))


def test_restrict_and_flags_restored():
    model = next(t for t in TOYS if t.name == "batchnorm").build()  # training mode
    query = np.array([0.3, -1.0, 0.5, 0.2], np.float32)
    region = GenerativeRegion(model, "2", query)
    sub = region.restrict([7, 2, 5])
    assert sub.units.tolist() == [7, 2, 5] and region.units.size == 12  # the original is untouched
    Z = _points(region.query, 2000, np.random.default_rng(6))
    np.testing.assert_array_equal(sub.mismatches(Z), GenerativeRegion(model, "2", query, units=[2, 5, 7]).mismatches(Z))
    assert (sub.contains(Z) >= region.contains(Z)).all()  # fewer boundaries: a superset
    assert sub.contains(Z).sum() > region.contains(Z).sum()
    assert all(m.training for m in model.modules())


def test_generate():
    toy = next(t for t in TOYS if t.name == "batchnorm")
    model = toy.build()
    region = GenerativeRegion(model, "1", np.zeros(4, np.float32), batch_size=7)
    Z = _points(region.query, 20, np.random.default_rng(7))
    out = region.generate(Z)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(Z))
    model.train()
    assert out.shape == (20, 5)
    torch.testing.assert_close(out, want)
    assert all(m.training for m in model.modules())


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 6), n=st.integers(1, 140), seed=st.integers(0, 2**16), data=st.data())
def test_polytope_property_random_shapes(d, n, seed, data):
    model = linear_relu(d=d, n=n, seed=seed)
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(d).astype(np.float32)
    units = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True)))
    region = GenerativeRegion(model, "0", query, units=units, batch_size=data.draw(st.integers(1, 300)))
    Z = _points(region.query, 257, rng)
    with torch.no_grad():
        pre = model[0](torch.from_numpy(Z)).numpy()
        ref = model[0](torch.tensor(region.query[None])).numpy()[0]
    np.testing.assert_array_equal(region.mismatches(Z), ((pre > 0) != (ref > 0))[:, units].sum(1))


# ---- bad input: a clear exception before any work ----------------------------------------------------------------
@pytest.fixture
def conv():
    return next(t for t in TOYS if t.name == "conv").build()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(layer="main.9"), ValueError, r"unknown layer 'main\.9'.*did you mean"),
    (dict(query=np.zeros(5, np.float32)), ValueError, "does not fit the model"),
    (dict(query=np.zeros((1, 6, 1, 1), np.float32)), ValueError, "does not fit the model"),
    (dict(query=np.zeros(0, np.float32)), ValueError, "one latent"),
    (dict(query=np.float32(1.0)), ValueError, "one latent"),
    (dict(query=np.array([0, 0, np.nan, 0, 0, 0], np.float32)), ValueError, "NaN or inf"),
    (dict(query=np.array([0, 0, np.inf, 0, 0, 0], np.float32)), ValueError, "NaN or inf"),
    (dict(query=np.array(["a"] * 6)), TypeError, "real numbers"),
    (dict(units=[0, 128]), ValueError, r"out of range \[0, 128\) of layer .main.2.: \[128\]"),
    (dict(units=[-1]), ValueError, "out of range"),
    (dict(units=[]), ValueError, "empty"),
    (dict(units=np.array([], np.int64)), ValueError, "empty"),
    (dict(units=[3, 1, 3]), ValueError, "duplicates: \\[3\\]"),
    (dict(units=[0.5, 1.0]), TypeError, "integer"),
    (dict(units=[True, False]), TypeError, "integer"),
    (dict(units=[[0, 1]]), ValueError, "1-D"),
    (dict(threshold=float("nan")), ValueError, "threshold must be finite"),
    (dict(threshold="0"), TypeError, "threshold"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
    (dict(batch_size=2.5), TypeError, "batch_size"),
    (dict(batch_size=True), TypeError, "batch_size"),
])
def test_bad_arguments(conv, kwargs, error, match):
    args = dict(layer="main.2", query=np.zeros((6, 1, 1), np.float32))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        GenerativeRegion(conv, **args)


def test_bad_latents_and_directions(conv):
    region = GenerativeRegion(conv, "main.2", np.zeros((6, 1, 1), np.float32))
    for Z in (np.zeros(6, np.float32), np.zeros((3, 5), np.float32), np.zeros((3, 6, 1), np.float32)):
        with pytest.raises(ValueError, match=r"Z must be \(n, 6\) or \(n, 6, 1, 1\)"):
            region.contains(Z)
    with pytest.raises(ValueError, match="NaN or inf"):
        region.mismatches(np.full((2, 6), np.nan, np.float32))
    with pytest.raises(TypeError, match="real numbers"):
        region.contains(np.zeros((2, 6), bool))
    with pytest.raises(ValueError, match="zero rows: \\[1\\]"):
        region.boundary_distance(np.array([[1, 0, 0, 0, 0, 0], [0] * 6], np.float32))
    with pytest.raises(ValueError, match="tol must be > 0"):
        region.boundary_distance(np.ones((1, 6)), tol=0)
    with pytest.raises(ValueError, match="max_distance must be > 0"):
        region.boundary_distance(np.ones((1, 6)), max_distance=-1.0)
    region.restrict([0])  # a valid restriction ...
    with pytest.raises(ValueError, match="unknown layer"):  # ... and a misspelt layer
        GenerativeRegion(conv, "main.2x", region.query)
    with pytest.raises(ValueError, match="out of range"):
        region.restrict([10**6])
    with pytest.raises(RuntimeError, match="never ran"):
        GenerativeRegion(next(t for t in TOYS if t.name == "nested").build(), "unused", np.zeros(5, np.float32))


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 5), n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_boundary_distance_property_random_polytopes(d, n, seed):
    model = linear_relu(d=d, n=n, seed=seed)
    W = model[0].weight.detach().double().numpy()
    b = model[0].bias.detach().double().numpy()
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(d).astype(np.float32)
    U = rng.standard_normal((16, d))
    want = polytope_exit(W, b, query, U / np.linalg.norm(U, axis=1, keepdims=True))
    got = GenerativeRegion(model, "0", query).boundary_distance(U, max_distance=50.0, tol=1e-3)
    np.testing.assert_allclose(got, np.minimum(want, 50.0), atol=1e-3 / 2 + 1e-4, rtol=0)


class _Sqrt(torch.nn.Module):
    def forward(self, x):
        return torch.sqrt(x)  # NaN for negative inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_layer_that_produces_nan_is_an_error_not_an_off_unit(dtype):
    """NaN compares False with every threshold; counting it as 'off' would call such latents inside or outside
    at random. Both the float32 path (the core) and the float64 path (numpy compare) must refuse it."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), _Sqrt(), torch.nn.ReLU()).to(dtype)  # the Linear sets the dtype
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
        model[0].bias.zero_()
    region = GenerativeRegion(model, "1", np.ones(3, np.float32))
    assert region.contains(np.full((2, 3), 2.0)).all()
    with pytest.raises(ValueError, match="layer '1' produced NaN for some latents"):
        region.contains(np.array([[2.0, 2.0, 2.0], [2.0, -1.0, 2.0]]))
