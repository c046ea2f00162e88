"""explore / sample_ball: every node certified by an independent plain-torch membership test, the default step
rule against analytic ray exits, determinism, bad input."""
import math
import time

import numpy as np
import pytest

from egbas_fast import core
from egbas_fast.baselines import BallSamples, sample_ball
from egbas_fast.exploration import Exploration, default_step_radius, explore
from egbas_fast.region import random_directions, ray_cap
from egbas_fast.region import GenerativeRegion

from .toys import TOYS, conv_generator, oracle_inside, polytope_exit

TOY = {t.name: t for t in TOYS}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_region(name, layer, seed=0, share=None):
    """Region of toy `name` at `layer` around a seeded N(0, I) query; `share` of the units (random) or all."""
    toy = TOY[name]
    model = toy.build()
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(toy.query_shape).astype(np.float32)
    full = GenerativeRegion(model, layer, query)
    if share is None:
        return toy, model, full
    units = np.sort(rng.choice(full.n_units, max(1, int(share * full.n_units)), replace=False))
    return toy, model, full.restrict(units)


CASES = [(t.name, layer, share) for t in TOYS for layer in t.layers for share in (None, 0.5)]


@pytest.mark.parametrize("mode", ["prior", "local"])
@pytest.mark.parametrize("name,layer,share", CASES)
def test_every_node_is_inside_by_plain_torch(name, layer, share, mode):
    toy, model, region = make_region(name, layer, seed=len(layer), share=share)
    res = explore(region, n=120, batch=32, seed=3, progress=False, radius="auto" if mode == "local" else None)
    z = res.latents
    assert res.mode == mode
    assert z.dtype == np.float32 and z.shape == (120, region.dim)
    assert np.array_equal(z[0], region.query)
    assert oracle_inside(toy.name, toy.query_shape, model, region, z).all()
    # a tree: root -1, every parent an earlier node, no node twice
    assert res.parents[0] == -1 and res.parents.dtype == np.int64
    assert ((res.parents[1:] >= 0) & (res.parents[1:] < np.arange(1, 120))).all()
    edges = np.linalg.norm(z[1:] - z[res.parents[1:]], axis=1)
    assert (edges > 0).all()
    if mode == "local":  # the paper's RRT: every edge at most one step long
        assert (edges <= res.step * (1 + 1e-5) + 1e-6).all()
    assert res.accepted == 119 and res.proposals >= res.accepted >= res.salvaged >= 0
    assert 0 < res.acceptance <= 1


def test_prior_mode_extends_to_the_target_on_a_convex_region():
    # a polytope (first layer): every segment between two inside points is inside, so every node IS its target,
    # a sample of the restricted prior, however far from its parent (edges far longer than the check spacing)
    toy, model, region = make_region("linear_relu", "1", seed=1)
    res = explore(region, n=200, batch=32, seed=0, progress=False)
    assert res.salvaged == 0 and res.accepted == res.proposals == 199
    edges = np.linalg.norm(res.latents[1:] - res.latents[res.parents[1:]], axis=1)
    assert edges.max() > 2 * res.step


def test_bisection_nodes_grow_along_the_boundary():
    # a step far larger than the region: direct proposals leave it, so the tree grows by bisection only,
    # and every such node is still inside and at least MIN_ADVANCE * step from its parent
    toy, model, region = make_region("linear_relu", "1", seed=1)
    step, radius = default_step_radius(region)
    res = explore(region, n=60, step=50 * step, radius=radius * 50, batch=16, seed=0, progress=False)
    assert res.salvaged > 0
    assert oracle_inside(toy.name, toy.query_shape, model, region, res.latents).all()


def test_default_step_and_radius_follow_the_stated_rule():
    toy, model, region = make_region("linear_relu", "0", seed=2)
    cap = ray_cap(region)
    assert cap == pytest.approx(2 * max(np.linalg.norm(region.query), 1.0))
    W, b = (p.detach().double().numpy() for p in (model[0].weight, model[0].bias))
    exits = np.minimum(polytope_exit(W, b, region.query, random_directions(64, region.dim, 0)), cap)
    r = np.median(exits)
    step, radius = default_step_radius(region, seed=0)
    assert step == pytest.approx(r / 2, abs=1e-3 * cap)
    assert radius == pytest.approx(3 * r * math.sqrt(3 / region.dim), abs=1e-2 * cap)
    res = explore(region, n=10, seed=0, progress=False, radius="auto")
    assert (res.step, res.radius, res.mode) == (step, radius, "local")
    res = explore(region, n=10, seed=0, progress=False)  # prior mode: checks every r along an extension
    assert (res.step, res.radius, res.mode) == (pytest.approx(2 * step), None, "prior")
    assert res.ray_distances == pytest.approx(np.minimum(exits, cap), abs=1e-3 * cap)  # the rays behind the step
    assert explore(region, n=10, step=step, seed=0, progress=False).ray_distances is None  # none measured


@pytest.mark.parametrize("layer", ["main.2", "main.5"])
@pytest.mark.parametrize("keep,least", [(0.05, 0.3), (0.2, 0.3), (1.0, 0.15)])
def test_default_acceptance_is_healthy(layer, keep, least):
    # d = 6 here: 300 nodes fill the small region of a whole layer, and then most proposals point out of it (the
    # tree is done exploring). The DCGAN numbers (d = 100, >= 30% everywhere) are measured in bench/.
    model = conv_generator()
    query = np.random.default_rng(5).standard_normal((6, 1, 1)).astype(np.float32)
    full = GenerativeRegion(model, layer, query)
    order = np.argsort(-np.abs(full.query_values), kind="stable")  # units far from their boundary first
    region = full.restrict(np.sort(order[:max(1, int(keep * full.n_units))]))
    res = explore(region, n=300, batch=64, seed=0, progress=False)
    assert res.accepted == 299 and res.acceptance >= least


def test_same_seed_same_tree_whatever_the_thread_count():
    _, _, region = make_region("conv", "main.2", seed=4, share=0.3)
    saved = core.get_num_threads()
    try:
        core.set_num_threads(1)
        one = explore(region, n=150, batch=32, seed=7, progress=False)
        core.set_num_threads(2)
        two = explore(region, n=150, batch=32, seed=7, progress=False)
    finally:
        core.set_num_threads(saved)
    assert np.array_equal(one.latents, two.latents) and np.array_equal(one.parents, two.parents)
    assert (one.proposals, one.salvaged) == (two.proposals, two.salvaged)
    other = explore(region, n=150, batch=32, seed=8, progress=False)
    assert not np.array_equal(one.latents, other.latents)


def test_max_proposals_stops_a_hopeless_run():
    _, _, region = make_region("conv", "main.5", seed=1)  # every unit of the layer: a tiny region
    res = explore(region, n=1000, step=100.0, radius=100.0, batch=8, max_proposals=40, seed=0, progress=False)
    assert res.proposals == 40 and len(res.latents) == res.accepted + 1 < 1000


def test_one_node_is_the_query():
    _, _, region = make_region("leaky", "1")
    res = explore(region, n=1, progress=False)
    assert res.latents.shape == (1, region.dim) and res.proposals == 0 and res.parents.tolist() == [-1]


@pytest.mark.parametrize("kwargs,error", [
    ({"n": 0}, ValueError), ({"n": -3}, ValueError), ({"n": 2.5}, TypeError), ({"n": True}, TypeError),
    ({"step": 0.0}, ValueError), ({"step": -1.0}, ValueError), ({"step": float("nan")}, ValueError),
    ({"step": float("inf")}, ValueError), ({"radius": 0}, ValueError), ({"radius": -2.0}, ValueError),
    ({"batch": 0}, ValueError), ({"batch": -1}, ValueError), ({"max_proposals": 0}, ValueError),
    ({"seed": -1}, ValueError), ({"step": "big"}, TypeError), ({"radius": "big"}, TypeError),
    ({"prior": "cauchy"}, ValueError), ({"box": (1.0, -1.0), "prior": "uniform"}, ValueError),
])
def test_bad_arguments_fail_before_any_work(kwargs, error):
    _, _, region = make_region("leaky", "1")
    calls = []
    region.contains = lambda Z: calls.append(1)  # any membership evaluation would be recorded
    with pytest.raises(error) as info:
        explore(region, progress=False, **kwargs)
    assert str(info.value).startswith(next(iter(kwargs))) and not calls  # the message names the argument first


def test_a_non_region_is_rejected():
    with pytest.raises(TypeError, match="GenerativeRegion"):
        explore(np.zeros(3), progress=False)
    with pytest.raises(TypeError, match="GenerativeRegion"):
        sample_ball("region", eps=1.0)


# ------------------------------------------------------------------------------------------------- sample_ball
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_ball_samples_lie_in_the_ball_and_report_true_membership(norm):
    toy, model, region = make_region("conv", "main.2", seed=6, share=0.5)
    eps = 0.8
    s = sample_ball(region, n=2000, eps=eps, norm=norm, seed=3)
    assert isinstance(s, BallSamples) and s.latents.shape == (2000, region.dim) and s.latents.dtype == np.float32
    offset = s.latents.astype(np.float64) - region.query
    size = np.linalg.norm(offset, axis=1) if norm == "l2" else np.abs(offset).max(axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    truth = oracle_inside(toy.name, toy.query_shape, model, region, s.latents)
    assert np.array_equal(s.inside, truth)
    assert s.in_region_rate == truth.mean() and 0 < s.in_region_rate < 1  # it leaks: the point of the baseline
    d = region.dim
    if norm == "l2":  # uniform in the ball: P(|x| <= eps * 2^(-1/d)) = 1/2
        assert abs((size <= eps * 0.5 ** (1 / d)).mean() - 0.5) < 0.05
    else:  # uniform in the cube: every coordinate uniform in [-eps, eps], variance eps^2 / 3
        assert abs(offset.var() - eps ** 2 / 3) < 0.03 * eps ** 2
    again = sample_ball(region, n=2000, eps=eps, norm=norm, seed=3)
    assert np.array_equal(again.latents, s.latents)


@pytest.mark.parametrize("kwargs,message", [
    ({"eps": 0.0}, "eps"), ({"eps": -1.0}, "eps"), ({"eps": float("nan")}, "eps"), ({"eps": 1.0, "norm": "l1"}, "norm"),
    ({"eps": 1.0, "n": 0}, "n must"), ({"eps": 1.0, "seed": -2}, "seed"),
])
def test_sample_ball_bad_arguments(kwargs, message):
    _, _, region = make_region("leaky", "1")
    with pytest.raises(ValueError, match=message):
        sample_ball(region, **kwargs)


def test_exploration_numbers():
    """The counts and times are what happened: every membership call (the default step's ray march included) is
    made 2 ms slower, so membership_seconds must hold at least 2 ms per call."""
    _, _, region = make_region("leaky", "3", share=0.5)
    real_contains, calls = region.contains, []

    def slow_contains(Z):
        calls.append(len(Z))
        time.sleep(0.002)
        return real_contains(Z)

    region.contains = slow_contains
    res = explore(region, n=50, batch=8, progress=False)
    assert isinstance(res, Exploration) and res.region is region
    assert res.accepted == len(res.latents) - 1 == 49 and res.accepted <= res.proposals
    assert res.acceptance == pytest.approx(49 / res.proposals) and 0 < res.acceptance <= 1
    assert res.proposals <= sum(calls)  # every proposal was evaluated at least once
    assert 0.002 * len(calls) <= res.membership_seconds <= res.seconds
    assert res.nodes_per_second == pytest.approx(49 / res.seconds)


def test_extend_stops_at_the_first_outside_point_of_each_segment():
    """_extend against a hand-computed half-space {x0 < 1}: a segment fully inside reaches its target; a blocked one
    ends just inside the wall it meets first (even if it would come back inside later), bisected."""
    from egbas_fast.exploration import BISECT_STEPS, _extend

    contains = lambda z: (z[:, 0] < 1.0) | (z[:, 0] > 2.0)  # noqa: E731  a slab outside: [1, 2]
    origins = np.zeros((3, 2), np.float32)
    targets = np.array([[0.0, 0.9], [3.0, 0.0], [0.9, 0.0]], np.float32)  # inside / crosses the slab / inside
    pts, ok, bisected = _extend(origins, targets, 0.5, contains)
    assert ok.all() and bisected.tolist() == [False, True, False]
    np.testing.assert_array_equal(pts[[0, 2]], targets[[0, 2]])
    assert 1.0 - 0.5 / 2 ** BISECT_STEPS <= pts[1, 0] < 1.0 and pts[1, 1] == 0.0
