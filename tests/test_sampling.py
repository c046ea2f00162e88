"""sample_region against exact answers: a half-space (the restricted prior is a truncated normal along its normal,
untouched across it), the polytope of an affine first layer (a long closed-form hit-and-run chain as the oracle),
the uniform-box prior; every sample inside by a plain-torch oracle; the affine detector; the mixing diagnostics."""
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from egbas_fast import core
from egbas_fast.region import GenerativeRegion
from egbas_fast.sampling import (VISITS_PER_TRAJECTORY, RegionSampler, RegionSamples, piecewise_affine, polytope,
                                 sample_region, split_rhat_ess)

from .toys import TOYS, _seeded, oracle_inside

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOY = {t.name: t for t in TOYS}
P_MIN = 1e-3  # KS p-value floor: a wrong distribution gives p ~ 1e-10 and below at these sizes
# KS needs independent draws: the tests take the last state of as many independent chains as samples.


def half_space(d=4, seed=0):
    """relu(w z + b), one unit, on at the query: the region is the half-space {w z + b > 0}."""
    model = _seeded(nn.Sequential(nn.Linear(d, 1), nn.ReLU()), seed)
    with torch.no_grad():
        model[0].bias.fill_(-0.8)  # the boundary cuts the prior off-centre: a visible truncation
        model[0].weight.mul_(2.0 / model[0].weight.norm())
    w, b = model[0].weight[0].detach().double().numpy(), float(model[0].bias.detach())
    query = (1.5 * w / np.linalg.norm(w)).astype(np.float32)  # on: w.q + b = 3 - 0.8 > 0
    return model, GenerativeRegion(model, "1", query), w, b


@pytest.mark.parametrize("method", ["polytope", "reflective", "slice"])
def test_half_space_gives_a_truncated_normal_along_its_normal(method):
    model, region, w, b = half_space()
    rs = sample_region(region, n=1200, seed=1, method=method, chains=1200, warmup=40, progress=False)
    assert rs.method == method and rs.latents.shape == (1200, 4) and rs.latents.dtype == np.float32
    assert region.contains(rs.latents).all()
    u = w / np.linalg.norm(w)
    along = rs.latents.astype(np.float64) @ u  # N(0, 1) truncated to > -b/|w|
    lower = -b / np.linalg.norm(w)
    assert along.min() > lower
    assert stats.kstest(along, stats.truncnorm(lower, np.inf).cdf).pvalue > P_MIN
    ortho = np.linalg.svd(np.eye(4) - np.outer(u, u))[0][:, :3]  # an orthonormal basis of the boundary plane
    for k in range(3):
        assert stats.kstest(rs.latents @ ortho[:, k], "norm").pvalue > P_MIN
    # what sampling without the region would give fails the same test
    assert stats.kstest(along, "norm").pvalue < P_MIN


def test_uniform_prior_is_uniform_on_the_box_part_of_the_half_space():
    model, region, w, b = half_space(d=3, seed=2)
    rs = sample_region(region, n=1200, seed=0, prior="uniform", box=(-2.0, 2.0), chains=1200, warmup=40,
                       progress=False)
    z = rs.latents.astype(np.float64)
    assert (np.abs(z) <= 2.0).all() and ((z @ w + b) > 0).all() and rs.prior.kind == "uniform"
    # oracle: uniform on the box, kept where inside (rejection sampling is exact for a uniform prior)
    ref = np.random.default_rng(0).uniform(-2, 2, (40000, 3))
    ref = ref[ref @ w + b > 0][:3000]
    for k in range(3):
        assert stats.ks_2samp(z[:, k], ref[:, k]).pvalue > P_MIN


def hit_and_run(A, c, start, steps, chains, rng):
    """Oracle: Gaussian hit-and-run in {A z + c > 0} with exact chords and exact truncated-normal draws."""
    z = np.repeat(start[None], chains, 0).astype(np.float64)
    out = []
    for i in range(steps):
        u = rng.standard_normal(z.shape)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        m, s = z @ A.T + c, u @ A.T
        with np.errstate(divide="ignore", invalid="ignore"):
            r = -m / s
        lo = np.where(s > 0, r, -np.inf).max(1)
        hi = np.where(s < 0, r, np.inf).min(1)
        mu = -(z * u).sum(1)
        t = stats.truncnorm.rvs(lo - mu, hi - mu, loc=mu, random_state=rng)
        z = z + t[:, None] * u
        if i >= steps // 2 and i % 10 == 0:
            out.append(z.copy())
    return np.concatenate(out)


@pytest.mark.parametrize("method", ["polytope", "reflective", "slice"])
def test_affine_first_layer_matches_exact_hit_and_run(method):
    toy = TOY["linear_relu"]
    model = toy.build()
    query = np.random.default_rng(3).standard_normal(3).astype(np.float32)
    region = GenerativeRegion(model, "1", query)
    W, b = (p.detach().double().numpy() for p in (model[0].weight, model[0].bias))
    s = np.where(W @ query + b > 0, 1.0, -1.0)
    ref = hit_and_run(s[:, None] * W, s * b, query, 600, 32, np.random.default_rng(0))  # (960, 3)
    rs = sample_region(region, n=1000, seed=2, method=method, chains=1000, warmup=40, progress=False)
    assert oracle_inside(toy.name, toy.query_shape, model, region, rs.latents).all()
    z = rs.latents.astype(np.float64)
    assert stats.ks_2samp(np.linalg.norm(z - query, axis=1), np.linalg.norm(ref - query, axis=1)).pvalue > P_MIN
    for k in range(3):
        assert stats.ks_2samp(z[:, k], ref[:, k]).pvalue > P_MIN


@pytest.mark.parametrize("name,layer,affine", [("linear_relu", "1", True), ("linear_relu", "0", True),
                                               ("inplace_relu", "1", True), ("leaky", "1", True),
                                               ("leaky", "3", False), ("conv", "main.2", True),
                                               ("conv", "main.5", False)])
def test_polytope_is_found_exactly_where_the_prefix_is_affine(name, layer, affine):
    toy = TOY[name]
    model = toy.build()
    query = np.random.default_rng(4).standard_normal(toy.query_shape).astype(np.float32)
    region = GenerativeRegion(model, layer, query)
    poly = polytope(region)
    assert (poly is not None) == affine
    if affine:  # the polytope reproduces the model's own membership on points near and far
        F, g = poly
        Z = np.vstack([query.reshape(1, -1) + 0.3 * np.random.default_rng(5).standard_normal((300, region.dim)),
                       np.random.default_rng(6).standard_normal((300, region.dim))]).astype(np.float32)
        margin = Z @ F.T + g
        clear = (np.abs(margin) > 1e-4).all(1)  # not on a wall up to float rounding
        assert np.array_equal((margin[clear] > 0).all(1), region.contains(Z[clear]))


@pytest.mark.parametrize("name,layer,k,query_seed,method", [
    ("leaky", "3", 6, 10, "piecewise"), ("inplace_relu", "3", None, 10, "piecewise"),
    ("leaky", "3", 6, 10, "reflective"), ("leaky", "4", None, 10, "reflective"),
    ("inplace_relu", "4", None, 15, "reflective")])
def test_hmc_on_a_deeper_region_matches_rejection_sampling(name, layer, k, query_seed, method):
    """Affine -> (Leaky)ReLU -> affine -> layer (piecewise, exact), and one more nonlinearity deep (reflective, walls
    found between membership checks): the region is not a polytope, so the oracle is rejection sampling from
    N(0, I) (exact); the last states of independent chains (the default kernel) must match it."""
    toy = TOY[name]
    model = toy.build()
    query = np.random.default_rng(query_seed).standard_normal(toy.query_shape).astype(np.float32)
    full = GenerativeRegion(model, layer, query)
    region = full if k is None else full.restrict(np.sort(np.argsort(-np.abs(full.query_values))[:k]))
    assert polytope(region) is None and (piecewise_affine(region)[0] is not None) == (layer == "3")
    prior = np.random.default_rng(0).standard_normal((60000, region.dim)).astype(np.float32)
    ref = prior[oracle_inside(name, toy.query_shape, model, region, prior)].astype(np.float64)
    assert len(ref) > 3000
    rs = sample_region(region, n=300, seed=1, chains=300, warmup=10, progress=False,
                       method="auto" if layer == "4" else method)
    assert rs.method == method
    assert oracle_inside(name, toy.query_shape, model, region, rs.latents).all()
    z = rs.latents.astype(np.float64)
    assert stats.ks_2samp(np.linalg.norm(z - query, axis=1), np.linalg.norm(ref - query, axis=1)).pvalue > P_MIN
    for k in range(region.dim):
        assert stats.ks_2samp(z[:, k], ref[:, k]).pvalue > P_MIN
    # the same chains without the region's walls would not pass: the plain prior fails the distance test
    free = np.random.default_rng(1).standard_normal((300, region.dim))
    assert stats.ks_2samp(np.linalg.norm(free - query, axis=1), np.linalg.norm(ref - query, axis=1)).pvalue < P_MIN


@pytest.mark.parametrize("layer,query_seed,method", [("3", 10, "piecewise"), ("4", 15, "reflective")])
def test_explore_takes_trajectory_targets_and_reaches_as_far_as_the_samples(layer, query_seed, method):
    """On a two- (three-) layer region the default tree's targets come from the piecewise (reflective) kernel: every
    node inside by the plain-torch oracle, and its mean distance from the query is that of the samples (not a
    near-copy cloud)."""
    from egbas_fast.exploration import explore

    toy = TOY["inplace_relu"]
    model = toy.build()
    query = np.random.default_rng(query_seed).standard_normal(toy.query_shape).astype(np.float32)
    region = GenerativeRegion(model, layer, query)
    res = explore(region, n=300, seed=0, progress=False)
    assert res.sampler_method == method and len(res.latents) == 300
    assert oracle_inside("inplace_relu", toy.query_shape, model, region, res.latents).all()
    rs = sample_region(region, n=300, seed=1, progress=False)
    reach = np.linalg.norm(res.latents - query, axis=1).mean() / np.linalg.norm(rs.latents - query, axis=1).mean()
    assert reach > 0.8
    # the sampler's visited positions: V per trajectory, time-major, the last 8 chains' rows the new states; all
    # inside by the oracle, and only the V - 1 earlier times cost model evaluations
    V = VISITS_PER_TRAJECTORY
    sampler = RegionSampler(region, chains=8, seed=3, method=method)
    states = sampler.step()
    before = sampler.evaluations
    visited = sampler.visited
    assert len(visited) <= V * 8 and oracle_inside("inplace_relu", toy.query_shape, model, region, visited).all()
    if method == "reflective":  # V of its checked positions per accepted trajectory, none dropped
        assert len(visited) == V * sampler.moves
    np.testing.assert_array_equal(visited[-8:], states)
    assert sampler.evaluations - before == ((V - 1) * 8 if method == "piecewise" else 0)


def test_use_chains_refuses_to_drop_states():
    model, region, _, _ = half_space()
    sampler = RegionSampler(region, chains=8, seed=0)
    sampler.use_chains(3)
    assert sampler.z.shape == (3, 4)
    sampler.step()
    with pytest.raises(RuntimeError, match="before sampling"):
        sampler.use_chains(2)


def test_piecewise_affine_reproduces_the_models_membership():
    toy = TOY["conv"]
    model = toy.build()
    query = np.random.default_rng(7).standard_normal(toy.query_shape).astype(np.float32)
    region = GenerativeRegion(model, "main.5", query)
    pw, spent = piecewise_affine(region)
    assert spent > region.dim and pw.L.shape == (region.units.size, pw.A.shape[0])
    Z = np.vstack([query.reshape(1, -1) + 0.3 * np.random.default_rng(5).standard_normal((300, region.dim)),
                   np.random.default_rng(6).standard_normal((300, region.dim))])
    h = pw.values(Z)
    clear = (np.abs(h) > 1e-4).all(1)
    assert clear.mean() > 0.9 and np.array_equal((h[clear] > 0).all(1), region.contains(Z[clear].astype(np.float32)))
    # a layer two nonlinearities deep is not of this form
    assert piecewise_affine(GenerativeRegion(model, "main.7", query))[0] is None
    with pytest.raises(ValueError, match="method='slice'"):
        sample_region(GenerativeRegion(model, "main.2", query), method="piecewise", progress=False)


@pytest.mark.parametrize("method,layer", [("piecewise", "main.5"), ("slice", "main.5"), ("reflective", "main.7")])
def test_every_sample_of_a_deep_layer_is_inside_and_reproducible(method, layer):
    toy = TOY["conv"]
    model = toy.build()
    query = np.random.default_rng(7).standard_normal(toy.query_shape).astype(np.float32)
    full = GenerativeRegion(model, layer, query)
    region = full.restrict(np.sort(np.argsort(-np.abs(full.query_values))[:40]))
    saved = core.get_num_threads()
    try:
        core.set_num_threads(1)
        one = sample_region(region, n=200, seed=3, warmup=10, method=method, progress=False)
        core.set_num_threads(2)
        torch.set_num_threads(2)
        two = sample_region(region, n=200, seed=3, warmup=10, method=method, progress=False)
    finally:
        core.set_num_threads(saved)
        torch.set_num_threads(1)
    assert isinstance(one, RegionSamples) and one.method == method
    assert np.array_equal(one.latents, two.latents)
    assert oracle_inside(toy.name, toy.query_shape, model, region, one.latents).all()
    other = sample_region(region, n=200, seed=4, warmup=10, method=method, progress=False)
    assert not np.array_equal(one.latents, other.latents)
    chains = 25 if method == "slice" else 16  # n/8, at most 16 for the trajectory kernels
    assert one.chains == chains and one.evaluations >= (10 + 200 // chains) * chains
    assert one.ess > 0 and np.isfinite(one.rhat)
    assert len(np.unique(one.latents, axis=0)) > 150  # chains move (slice sampling always moves)


def test_split_rhat_and_ess_on_known_chains():
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((200, 8))
    rhat, ess = split_rhat_ess(iid)
    assert abs(rhat - 1) < 0.02 and 0.7 * 1600 < ess < 1.3 * 1600
    shifted = iid + np.arange(8)  # chains that disagree
    assert split_rhat_ess(shifted)[0] > 1.5
    phi, x = 0.9, np.zeros((4000, 4))  # AR(1): ESS = N (1 - phi) / (1 + phi)
    for t in range(1, 4000):
        x[t] = phi * x[t - 1] + rng.standard_normal(4)
    expected = 16000 * (1 - phi) / (1 + phi)
    assert 0.6 * expected < split_rhat_ess(x)[1] < 1.6 * expected


@pytest.mark.parametrize("kwargs,error,message", [
    ({"n": 0}, ValueError, "n must"), ({"chains": 0}, ValueError, "chains"), ({"warmup": -1}, ValueError, "warmup"),
    ({"prior": "cauchy"}, ValueError, "prior"), ({"method": "mh"}, ValueError, "method"),
    ({"prior": "uniform", "box": (0.5, 2.0)}, ValueError, "box"), ({"seed": -1}, ValueError, "seed"),
])
def test_bad_arguments_fail_before_any_work(kwargs, error, message):
    model, region, _, _ = half_space()
    calls = []
    region.contains = lambda Z: calls.append(1)
    with pytest.raises(error, match=message):
        sample_region(region, progress=False, **kwargs)
    assert not calls


def test_polytope_method_on_a_non_affine_layer_says_what_to_use():
    toy = TOY["leaky"]
    region = GenerativeRegion(toy.build(), "3", np.zeros(toy.query_shape, np.float32) + 0.1)
    with pytest.raises(ValueError, match="method='slice'"):
        sample_region(region, method="polytope", progress=False)


@pytest.mark.parametrize("method", ["polytope", "reflective", "slice"])
def test_a_bounded_region_is_sampled_uniformly_on_its_bounds(method):
    """A region with bounds (a classifier's pixel box) gets the uniform prior on them by default: every sample in
    the box and inside, uniform there (rejection oracle); a normal prior or a box beyond the bounds is refused."""
    model, region, w, b = half_space(d=3, seed=2)
    region = GenerativeRegion(model, "1", np.clip(region.query, -1.4, 1.4))  # the query inside the bounds
    region.bounds = (-1.5, 1.5)
    rs = sample_region(region, n=2400, seed=0, method=method, chains=2400, warmup=40, progress=False)
    z = rs.latents.astype(np.float64)
    assert rs.prior.kind == "uniform" and (rs.prior.low, rs.prior.high) == (-1.5, 1.5)
    assert (np.abs(z) <= 1.5).all() and ((z @ w + b) > 0).all()
    ref = np.random.default_rng(0).uniform(-1.5, 1.5, (80000, 3))
    ref = ref[ref @ w + b > 0][:6000]
    for k in range(3):
        assert stats.ks_2samp(z[:, k], ref[:, k]).pvalue > P_MIN
    for prior, box in (("normal", None), ("uniform", (-2.0, 2.0))):
        with pytest.raises(ValueError, match="bounded"):
            sample_region(region, prior=prior, box=box, progress=False)


def test_reflective_with_a_uniform_prior_matches_rejection_sampling():
    """A uniform box prior two nonlinearities deep: straight trajectories folded at the box's faces and reflected
    off the region's walls. The oracle is rejection sampling from the box (exact); the box without the region's
    walls fails the same test."""
    toy = TOY["inplace_relu"]
    model = toy.build()
    query = np.clip(np.random.default_rng(15).standard_normal(toy.query_shape), -1.9, 1.9).astype(np.float32)
    region = GenerativeRegion(model, "4", query)
    box = np.random.default_rng(0).uniform(-2, 2, (60000, region.dim)).astype(np.float32)
    ref = box[oracle_inside("inplace_relu", toy.query_shape, model, region, box)].astype(np.float64)
    assert len(ref) > 3000
    rs = sample_region(region, n=300, seed=1, chains=300, warmup=10, prior="uniform", box=(-2.0, 2.0), progress=False)
    assert rs.method == "reflective" and rs.prior.kind == "uniform"
    z = rs.latents.astype(np.float64)
    assert (np.abs(z) <= 2.0).all() and oracle_inside("inplace_relu", toy.query_shape, model, region, z).all()
    dist = np.linalg.norm(ref - query, axis=1)
    assert stats.ks_2samp(np.linalg.norm(z - query, axis=1), dist).pvalue > P_MIN
    for k in range(region.dim):
        assert stats.ks_2samp(z[:, k], ref[:, k]).pvalue > P_MIN
    assert stats.ks_2samp(np.linalg.norm(box[:300] - query, axis=1), dist).pvalue < P_MIN


def test_box_motion_folds_at_the_faces():
    """The uniform prior's free motion: inside the box at every time, continuous, |velocity| kept, and equal to the
    straight line until the first face."""
    from egbas_fast.sampling import _motion

    rng = np.random.default_rng(0)
    z0, v0 = rng.uniform(-1, 2, (50, 4)), 3 * rng.standard_normal((50, 4))
    t = np.linspace(0, 5, 2001)
    path = np.stack([_motion(z0, v0, np.full(50, ti), (-1.0, 2.0))[0] for ti in t])  # (T, 50, 4)
    assert ((path >= -1) & (path <= 2)).all()
    assert np.abs(np.diff(path, axis=0)).max() <= np.abs(v0).max() * (t[1] - t[0]) + 1e-12  # no jumps
    _, vel = _motion(z0, v0, np.full(50, 2.7), (-1.0, 2.0))
    np.testing.assert_array_equal(np.abs(vel), np.abs(v0))
    first = np.min(np.where(v0 > 0, (2 - z0) / v0, (-1 - z0) / v0), axis=1)  # time to the first face
    early = first / 2
    np.testing.assert_allclose(_motion(z0, v0, early, (-1.0, 2.0))[0], z0 + v0 * early[:, None], atol=1e-12)


def test_box_slice_without_walls_samples_the_whole_box():
    """The box slice kernel's chord has no walls, only the box (it once crashed on k = 0)."""
    model = _seeded(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), 0)
    region = GenerativeRegion(model, "1", np.zeros(2, np.float32))
    region.bounds = (-1.0, 1.0)
    region.contains = lambda Z: np.ones(len(Z), bool)  # membership everywhere: only the box limits the chord
    rs = sample_region(region, n=2000, seed=0, method="slice", chains=2000, warmup=10, progress=False)
    assert (np.abs(rs.latents) <= 1).all()
    assert stats.kstest(rs.latents[:, 0], stats.uniform(-1, 2).cdf).pvalue > P_MIN
