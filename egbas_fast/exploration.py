"""E-GBAS exploration: a batched RRT whose every node is certified inside the generative region, and the ε-ball
baseline it is compared with.

One round of `explore` (N = nodes so far, B = min(batch, N, n - N) proposals, d = latent dimension):
    targets  (B, d)  uniform in the box of half-width `radius` around the query      core.random_uniform_box
    nearest  (B,)    nearest node among the N nodes that existed when the round began  Tree.nearest
    cand     (B, d)  each nearest node moved at most `step` toward its target          core.steer
    inside   (B,)    ONE batched forward of the layer prefix                           region.contains
    rejected ones:   `BISECT_STEPS` batched bisections on the segment node -> candidate; the farthest point that
                     evaluated inside becomes a node if it is at least `MIN_ADVANCE` * step from its node, so the
                     tree keeps growing along the boundary instead of stalling at it.
Every node was itself evaluated by `region.contains`: nothing is assumed from convexity.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ._checks import positive_int, positive_real
from ._checks import seed as check_seed

from . import core
from .region import check_region, random_directions, ray_cap

BISECT_STEPS = 2  # a rejected candidate is resolved to 1/4 of its segment: 2 extra forwards of the rejected ones
MIN_ADVANCE = 0.25  # a bisection point becomes a node only if it moved >= this fraction of the step
# With 2 steps and 1/4, a rejected candidate is salvaged iff the point at 1/2 or at 1/4 of its segment is inside:
# a third step would salvage exactly the same ones (it only moves them closer to the boundary) for 50% more forwards.
N_RAYS = 64  # rays from the query used to derive the default step and radius
STEP_FRACTION = 0.5  # default step = this * median ray distance r from the query to the boundary
RADIUS_FACTOR = 3.0  # default targets lie at about this * r from the query: the tree is pulled to the boundary
MAX_CHECKS = 8  # most points evaluated on one extension (prior mode): longer segments are checked more coarsely
TARGET_CHAINS = 64  # restricted-prior chains that supply the targets (prior mode), advanced together
TRAJECTORY_WARMUP = 2  # trajectories per chain before a piecewise / reflective chain's states become targets (one
# from the query already reaches the region's typical distance; sample_region's longer warm-up is for its R-hat)
PROPOSALS_PER_NODE = 50  # default max_proposals = this * n: a hopeless step/radius ends instead of spinning


# ------------------------------------------------------------------------------------------- default step/radius
def ray_distances(region, seed=0):
    """(N_RAYS,) float64: distances from the query to the region's boundary along N_RAYS random directions of
    `seed` (ray bisection to 0.1% of `ray_cap`: plenty for a median; rays capped at `ray_cap`)."""
    cap = ray_cap(region)
    return np.asarray(region.boundary_distance(random_directions(N_RAYS, region.dim, seed), max_distance=cap,
                                               tol=1e-3 * cap), np.float64)


def default_step_radius(region, seed=0, distances=None):
    """The default `step` and `radius` of `explore`, derived from the region itself. Returns (step, radius).
    distances: `ray_distances(region, seed)` when already measured.

    Rule: r = median distance from the query to the region's boundary along N_RAYS random directions
    (`ray_distances`). step = r / 2. radius = 3 r sqrt(3 / d): a uniform
    point of the box of half-width `radius` lies at distance ~ radius * sqrt(d / 3) = 3 r from the query, so
    targets pull the tree out to the boundary in every direction, and two steps reach it in a typical one.
    Measured at every ReLU layer, keep 1-10%, 500 nodes (bench/bench_explore.py --acceptance): on the face DCGAN
    84-93% of proposals become nodes, 21-38% of those by bisection; on the default mnist DCGAN (two extra blocks
    per resolution, 6 ReLU layers) 72-83%, 30-52% by bisection. The nodes' mean distance from the query is ~0.9 r.
    """
    r = float(np.median(ray_distances(region, seed) if distances is None else distances))
    if not (math.isfinite(r) and r > 0.0):
        raise ValueError(f"the region has no room around the query (median boundary distance {r}); "
                         "keep fewer boundaries or pass step= and radius= explicitly")
    return STEP_FRACTION * r, RADIUS_FACTOR * r * math.sqrt(3.0 / region.dim)


# ------------------------------------------------------------------------------------------------------ results
@dataclass
class Exploration:
    """The tree found by `explore`. Every row of `latents` was evaluated inside the region."""

    latents: np.ndarray  # (m, d) float32; row 0 is the query
    parents: np.ndarray  # (m,) int64; -1 for the root, parents[i] < i
    proposals: int  # RRT candidates evaluated (bisection evaluations not counted)
    accepted: int  # nodes added (m - 1), including `salvaged`
    salvaged: int  # nodes added by bisecting a rejected candidate
    seconds: float  # wall time of explore, default step/radius search included
    membership_seconds: float  # part of `seconds` spent inside region.contains (the model's forward)
    step: float  # prior mode: spacing of the points checked on an extension; local mode: the RRT step
    radius: object  # local mode: half-width of the target box; None in prior mode
    batch: int
    seed: int
    region: object = field(repr=False)  # kept so that `save` can generate outputs and re-check membership
    mode: str = "prior"  # "prior" (targets from the restricted prior) or "local" (box around the query)
    prior: str = "normal"
    box: tuple = (-1.0, 1.0)  # the uniform prior's box (unused for the normal prior)
    sampler_method: object = None  # "polytope", "piecewise", "reflective" or "slice" in prior mode
    ray_distances: object = field(default=None, repr=False)  # (N_RAYS,) query-to-boundary distances behind the
    # default step (`ray_distances`); None when step (and radius) were given

    @property
    def acceptance(self):
        """Nodes added per RRT proposal."""
        return self.accepted / self.proposals if self.proposals else 0.0

    @property
    def nodes_per_second(self):
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def save(self, out_dir, selection=None, name=None, n_baseline=None, source=None):
        """Write the report (report.html, PNGs, latents.npz, summary.json) into `out_dir`. Returns its Path.

        selection: the `Selection` the region came from; its `theta` orders the layer's units for profile.png
        (without it: the region's units first, then the rest of the layer in index order). name: model name shown
        on the page. n_baseline: samples per ε baseline (default: as many as tree nodes, at most 2000).
        source: a `queries.QuerySource` (where the query came from, the run's settings) shown on the page.
        """
        from .report import build_report

        return build_report(self, out_dir, selection=selection, name=name, n_baseline=n_baseline, source=source)


# -------------------------------------------------------------------------------------------------- algorithms
def explore(region, n=500, step=None, radius=None, batch=256, max_proposals=None, seed=0, progress=True,
            prior=None, box=(-1.0, 1.0)):
    """Grow a tree of up to `n` nodes (query included) inside `region` (see the module docstring).

    Default (radius=None): the region under the generator's prior. Targets are samples of the prior restricted to
    the region (`sampling.RegionSampler`, sample_region's kernel: exact HMC where the prefix is affine or
    affine -> ReLU -> affine, else reflective HMC with the model as oracle (16 of each trajectory's 32 checked
    positions are targets); the slice kernel only for a uniform prior beyond the first layer; prior None = the region's
    own: uniform on its bounds if it has them, else N(0, I); or "normal", or "uniform" on `box`), and each
    proposal extends its nearest node toward its target as far as the region allows: the segment is evaluated
    every `step` (at most MAX_CHECKS points), the node goes to the target if every point is inside, else to the
    farthest inside point before the first outside one, refined by BISECT_STEPS bisections.
    step None = r, the median ray distance from the query to the boundary.

    radius given: the paper's local RRT around the query: targets uniform in the box of half-width `radius`,
    each nearest node moved at most `step` toward its target (step None = r/2). radius="auto" uses
    `default_step_radius`'s radius (3r*sqrt(3/d)).

    batch: most proposals per round (one batched forward for their checks). max_proposals: stop after this many
    proposals even if the tree is smaller (default 50 * n). seed: same seed -> same tree, whatever the thread
    count.
    """
    from .sampling import RegionSampler, as_prior, default_chains, default_warmup

    check_region(region)
    n = positive_int(n, "n")
    batch = positive_int(batch, "batch")
    step = None if step is None else positive_real(step, "step")
    local = radius is not None
    if radius is not None and radius != "auto":
        radius = positive_real(radius, "radius")
    max_proposals = PROPOSALS_PER_NODE * n if max_proposals is None else positive_int(max_proposals, "max_proposals")
    seed = check_seed(seed)
    prior = as_prior(prior, box, region)

    t0 = time.perf_counter()
    member_seconds = 0.0

    def contains(z):
        nonlocal member_seconds
        t = time.perf_counter()
        inside = np.asarray(region.contains(z), bool)
        member_seconds += time.perf_counter() - t
        return inside

    distances = None
    if step is None or radius == "auto":  # ray marches: region.contains calls, counted as membership time
        t = time.perf_counter()
        distances = ray_distances(region, seed)
        auto_step, auto_radius = default_step_radius(region, seed, distances)
        member_seconds += time.perf_counter() - t
        step = step if step is not None else (auto_step if local else auto_step / STEP_FRACTION)
        radius = auto_radius if radius == "auto" else radius
    query = np.ascontiguousarray(region.query, np.float32).reshape(-1)  # (d,), inside by definition

    sampler = None
    if not local:
        t = time.perf_counter()
        # the kernel sample_region uses: exact HMC on affine (polytope) and affine -> ReLU -> affine (piecewise)
        # prefixes, reflective otherwise; their trajectories cost ~100+ forwards' work, so they run fewer chains
        sampler = RegionSampler(region, chains=min(n, TARGET_CHAINS), prior=prior, seed=seed)
        trajectories = sampler.method in ("piecewise", "reflective")
        if trajectories:
            sampler.use_chains(default_chains(sampler.method, n))
        # targets from the restricted prior, not the query's start; a trajectory gives 16 targets (its positions
        # at fixed times)
        for _ in range(TRAJECTORY_WARMUP if trajectories else default_warmup(sampler.method)):
            sampler.step()
        member_seconds += time.perf_counter() - t
    queue = np.empty((0, query.size), np.float32)

    tree = core.Tree(query.size, capacity=min(n, 1 << 16))
    tree.add(query[None], np.array([-1], np.int64))
    proposals = salvaged = 0
    bar = _progress(n, progress)
    bar.update(1)
    while tree.size < n and proposals < max_proposals:
        # At most one proposal per existing node: the tree at most doubles per round, so it grows deep (as the
        # sequential RRT does) instead of putting a whole first batch of siblings around the root. At most one
        # per missing node: a proposal adds at most one node, so none is evaluated and then thrown away.
        b = min(batch, tree.size, n - tree.size, max_proposals - proposals)
        if local:
            targets = core.random_uniform_box(query, radius, b, seed, proposals)  # draws proposals.. of the seed
            targets = in_bounds(region, targets)  # steering between two points of a box stays in the box
        else:
            while len(queue) < b:
                t = time.perf_counter()
                sampler.step()  # every state evaluated inside (and in bounds)
                queue = np.concatenate([queue, sampler.visited])  # trajectory kernels: 16 positions each
                member_seconds += time.perf_counter() - t
            targets, queue = queue[:b], queue[b:]
        near, _ = tree.nearest(targets)  # (b,) among the nodes of the round's start
        origins = tree.points[near]  # (b, d) copy
        if local:
            pts, ok, bisected = _step_toward(origins, targets, step, contains)
        else:
            pts, ok, bisected = _extend(origins, targets, step, contains)
        proposals += b
        salvaged += int((ok & bisected).sum())
        if ok.any():
            tree.add(np.ascontiguousarray(pts[ok]), np.ascontiguousarray(near[ok]))
        bar.update(int(ok.sum()))
    bar.close()
    m = tree.size
    return Exploration(latents=np.array(tree.points[:m], np.float32), parents=np.array(tree.parents[:m], np.int64),
                       proposals=proposals, accepted=m - 1, salvaged=salvaged, seconds=time.perf_counter() - t0,
                       membership_seconds=member_seconds, step=float(step),
                       radius=None if radius is None else float(radius), batch=batch, seed=seed, region=region,
                       mode="local" if local else "prior", prior=prior.kind,
                       box=(prior.low, prior.high),
                       sampler_method=None if sampler is None else sampler.method, ray_distances=distances)


def _step_toward(origins, targets, step, contains):
    """The paper's extension: each origin moved at most `step` toward its target; a rejected candidate is
    bisected. Returns (points, ok, bisected)."""
    cand = core.steer(origins, targets, step)  # (b, d)
    inside = contains(cand)
    pts, ok = cand.copy(), inside.copy()
    out = np.flatnonzero(~inside)
    if len(out):
        pts[out], ok[out] = _bisect(origins[out], cand[out], contains, MIN_ADVANCE * step)
    return pts, ok, ~inside


def _extend(origins, targets, step, contains):
    """RRT-Connect-style extension toward targets that are themselves inside: the segment origin -> target is
    evaluated at K - 1 interior points (K = its length / step, 1..MAX_CHECKS) in one batched call; the node is the
    target if all are inside, else the last inside point before the first outside one, bisected toward it.
    Returns (points, ok, bisected)."""
    delta = targets - origins  # (b, d)
    length = np.linalg.norm(delta.astype(np.float64), axis=1)
    K = np.clip(np.ceil(length / step), 1, MAX_CHECKS).astype(np.int64)  # (b,)
    row = np.repeat(np.arange(len(origins)), K - 1)  # interior points 1..K-1 of each segment, row by row
    j = np.arange(len(row)) - np.repeat(np.cumsum(K - 1) - (K - 1), K - 1) + 1
    frac = (j / K[row]).astype(np.float32)
    inside = contains(origins[row] + frac[:, None] * delta[row]) if len(row) else np.zeros(0, bool)
    first_out = np.full(len(origins), MAX_CHECKS + 1)  # interior index of the first outside point
    np.minimum.at(first_out, row[~inside], j[~inside])
    first_out[first_out > MAX_CHECKS] = -1  # -1: the whole segment is inside
    pts, ok = targets.copy(), np.ones(len(origins), bool)
    blocked = np.flatnonzero(first_out >= 0)
    if len(blocked):
        lo = ((first_out[blocked] - 1) / K[blocked]).astype(np.float32)[:, None]
        hi = (first_out[blocked] / K[blocked]).astype(np.float32)[:, None]
        a = origins[blocked] + lo * delta[blocked]  # inside (or the origin itself)
        c = origins[blocked] + hi * delta[blocked]  # outside
        best, _ = _bisect(a, c, contains, 0.0)
        pts[blocked] = best
        ok[blocked] = np.linalg.norm(best - origins[blocked], axis=1) >= MIN_ADVANCE * step * (1 - 1e-4)
    return pts, ok, first_out >= 0


def in_bounds(region, points):
    """`points` clipped to `region.bounds` (lo, hi) when the region has bounds (a classifier's pixel box)."""
    bounds = getattr(region, "bounds", None)
    return points if bounds is None else np.clip(points, bounds[0], bounds[1]).astype(np.float32, copy=False)


def _bisect(origins, cands, contains, min_advance):
    """Bisect each segment origin (inside) -> cand (outside) `BISECT_STEPS` times, one batched call per step.

    Returns (points (k, d), ok (k,)): the farthest point that evaluated inside, and whether it lies at least
    `min_advance` from its origin. Returned points are exactly the evaluated ones (no recomputation).
    """
    delta = cands - origins  # (k, d)
    lo = np.zeros(len(origins), np.float32)
    hi = np.ones(len(origins), np.float32)
    best = origins.copy()
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) * np.float32(0.5)
        pts = (origins + mid[:, None] * delta).astype(np.float32)
        inside = contains(pts)
        best[inside] = pts[inside]
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    return best, lo * np.linalg.norm(delta, axis=1) >= min_advance * (1 - 1e-4)  # float32 norm of a full step


def _progress(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="explore", unit="node", leave=False)
