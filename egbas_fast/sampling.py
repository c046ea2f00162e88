"""The latent prior restricted to a generative region: what the layer leaves free, sampled exactly by MCMC.

Target: p(z) ∝ prior(z) · 1[z in region], prior N(0, I) (default) or uniform on a box. Many chains start at the
query (inside by definition) and move together: one batched forward of the layer prefix evaluates every chain's
proposal. Every returned latent was evaluated inside by `region.contains`.

Four kernels, the first that applies chosen automatically (`method="auto"`):
  * "polytope": where the prefix is affine in z (e.g. the first Linear/ConvTranspose + BatchNorm before a ReLU) the
    region is a polytope {F z + g > 0}, read off the model with d + 1 forwards and verified on random points.
    Normal prior: exact Hamiltonian Monte Carlo for truncated Gaussians (Pakman & Paninski, "Exact Hamiltonian
    Monte Carlo for Truncated Multivariate Gaussians", JCGS 2014): the particle follows the ellipse
    z cos t + v sin t for t = π/2 and reflects off each wall it meets (hit times in closed form). Hit-and-run
    mixes badly in these long thin polytopes (face DCGAN main.2, keep 5%: autocorrelation ~0.55 at lag 200);
    the bouncing particle crosses one in a single trajectory. Box prior: hit-and-run with closed-form chords.
    Each end point is then evaluated by the model itself; a move the model calls outside (float rounding at a
    wall) is rejected, so the chain stays exact for the model's own region.
  * "piecewise" (normal prior): where the prefix is affine -> ReLU/LeakyReLU -> affine (face DCGAN main.5: the
    second ReLU) the sign-deciding values are h(z) = L act(A z + c) + e, read off the model (d + 1 forwards for
    A, c; one batched backward for L) and verified on random points. The same exact HMC, now through a union of
    polytopes: along the ellipse the hidden units switch at closed-form times, between switches h is a sinusoid
    with closed-form exit times, the particle passes switches untouched and reflects off the selected units on
    their gradient in the current piece (reflective HMC, Mohasel Afshar & Domke, NeurIPS 2015, with exact hit
    times: no step size, no grid to miss a thin excursion). Face DCGAN main.5, keep 5%: split R-hat ~1.0 and
    ~4-5 forwards per effective sample, against R-hat 12.9 and ~860 for the slice kernel (bench/bench_sampling.py).
    The trajectory runs in the C++ core (`core.PiecewiseHMC`; ~60 reflections and thousands of hidden switches,
    ~80-100 ms per trajectory on one core at face main.5, chains in parallel).
  * "reflective" (any layer of a model): the same reflective HMC with the model itself as the
    oracle: membership checked 32 times per trajectory on a fixed time grid, a wall met between two checks
    bracketed (regula falsi) and reflected off the exiting unit's input gradient (one batched backward). Walls
    thinner than a check interval can be crossed unseen, so it is not exact; the tests hold it to rejection
    sampling on three-layer toys and it agrees with the exact kernels on face main.2. Where the slice kernel does
    not mix (mnist DCGAN main.11, keep 5%: split R-hat ~10) it does: R-hat 1.01, ESS above n, ~255 forwards per
    effective sample. A trajectory costs ~200-1,500 forwards (its walls: ~30-130 at keep 5%, face main.2-main.8).
    A uniform prior on a box (a classifier's pixels): straight lines at a unit-variance velocity, folded at the
    box's faces (exact billiard reflections), for half the box's width of travel; the region's walls as above.
  * "slice" (any layer, any model; membership only): normal prior: elliptical slice sampling (Murray, Adams,
    MacKay, AISTATS 2010) with the region's indicator as likelihood: exact, no step size; box prior: slice
    sampling along a random chord of the box with Neal's shrinkage toward the current point. For regions that
    are not a model's layer (only `contains`).

Mixing is measured, not assumed: split R-hat and the effective sample size (Geyer's initial positive sequence over
all chains, as Stan computes them) of the distance from the query and of projections on fixed random directions.
"""
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._checks import positive_int
from ._checks import seed as check_seed
from .region import check_region

RHAT_WARN = 1.1  # split R-hat above this: chains disagree, samples are not yet from the restricted prior
ESS_WARN = 0.1  # effective sample size below this share of n: warn
HMC_TIME = math.pi / 2  # travel time of one exact-HMC trajectory (a quarter turn: independent in a free Gaussian)
# a uniform prior's trajectory (unit-variance velocity, straight lines folded at the box): half the box's width, so
# its 32 checks are as far apart, relative to the prior's spread, as a quarter turn's under N(0, I)
UNIFORM_TRAVEL = 0.5
METHODS = ("auto", "polytope", "piecewise", "reflective", "slice")
MAX_BOUNCES = 2000  # a trajectory still bouncing after this many walls is rejected (the chain stays put)
RESYNC_BOUNCES = 16  # the walls' values are recomputed from the positions this often along a trajectory
# Activations whose output is > 0 exactly where their input is > 0: their input is the pre-activation whose
# signs define the region, and may be affine in z where the output is not.
_SIGN_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
                    nn.Hardtanh, nn.Softsign, nn.Tanhshrink)


# ---------------------------------------------------------------------------------------------------- priors
@dataclass(frozen=True)
class Prior:
    """The generator's latent prior: "normal" N(0, I), or "uniform" on the box [low, high]^d."""

    kind: str = "normal"
    low: float = -1.0
    high: float = 1.0


def as_prior(prior=None, box=(-1.0, 1.0), region=None):
    """'normal' | 'uniform' | Prior | None -> Prior; box = (low, high) of the uniform prior.

    None: the region's own prior: uniform on `region.bounds` where the region has bounds (a classifier's or an
    image model's valid pixel box, where N(0, I) would leave the valid images), else N(0, I). A prior that leaves
    the region's bounds is refused.
    """
    bounds = getattr(region, "bounds", None)
    if prior is None:
        prior, box = ("normal", box) if bounds is None else ("uniform", bounds)
    if isinstance(prior, Prior):
        out = prior
    elif prior == "normal":
        out = Prior("normal")
    elif prior == "uniform":
        try:
            low, high = (float(v) for v in box)
        except (TypeError, ValueError):
            raise TypeError(f"box must be a pair (low, high) of numbers, got {box!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"box must be finite with low < high, got {box!r}")
        out = Prior("uniform", low, high)
    else:
        raise ValueError(f"prior must be 'normal', 'uniform' or None (the region's own), got {prior!r}")
    if bounds is not None and (out.kind == "normal" or out.low < bounds[0] or out.high > bounds[1]):
        raise ValueError(f"the region's inputs are bounded to {tuple(bounds)} (valid pixels), so its prior must stay "
                         f"inside: leave prior=None (uniform on the bounds) or pass prior='uniform' with a box inside "
                         f"them, got {out}")
    return out


# ------------------------------------------------------------------------------------------ affine regions
def _sign_spec(region):
    """(capture, shift): the region's sign-deciding values are the layer's `capture` ("input" for a
    sign-preserving activation at threshold 0, else "output") minus `shift`; None where no affine case can apply."""
    module = region._module
    if isinstance(module, nn.LeakyReLU) and module.negative_slope <= 0:
        return None
    use_input = isinstance(module, _SIGN_PRESERVING) and region.threshold == 0.0
    return ("input", 0.0) if use_input else ("output", region.threshold)


def _affine_fit(values, q, n_checks, seed):
    """values: (n, d) float64 -> (n, m) float64. (A (d, m), c (m,), values(q)) with values(z) = z A + c, read at q
    and q + e_j (d + 1 points) and checked at `n_checks` prior samples and points near q; None where not affine."""
    d = len(q)
    V = values(np.vstack([q, q + np.eye(d)]))  # (d+1, m)
    A = V[1:] - V[0]  # (d, m): the column of unit i is its gradient
    c = V[0] - q @ A
    rng = np.random.default_rng(seed)
    Z = np.vstack([rng.standard_normal((n_checks // 2, d)), q + 0.5 * rng.standard_normal((n_checks // 2, d))])
    got, predicted = values(Z), Z @ A + c
    scale = np.abs(got).max() + np.abs(A).sum(0).max() + 1e-6
    if not np.abs(got - predicted).max() <= 1e-4 * scale:  # float32 forwards agree to ~1e-6 of the scale
        return None
    return A, c, V[0]


def polytope(region, n_checks=16, seed=0):
    """(F, g) float64 with the region = {z : F z + g > 0} (rows: the selected units, signed as at the query),
    or None where the values that decide the units' signs are not affine in z (checked on random points).

    The sign-deciding values are the layer's input for a sign-preserving activation at threshold 0 (ReLU, ...),
    else the layer's output minus the threshold. They are read at the query and at the query + e_j (d + 1
    forwards), then compared with the affine prediction at `n_checks` prior samples and points near the query.
    """
    from .layers import one_thread

    spec = _sign_spec(region)
    if spec is None:
        return None
    q = region.query.astype(np.float64)
    try:
        with one_thread():  # the fitted coefficients feed every trajectory: no thread-count dependent rounding
            fit = _affine_fit(SignedValues(region, spec).raw, q, n_checks, seed)
    except Exception:  # a module whose input is not one tensor, etc.: not our affine case
        return None
    if fit is None:
        return None
    A, c, V0 = fit
    s = np.where(V0 > 0, 1.0, -1.0)  # on at the query: F z + g > 0 keeps it on; off: keeps it off
    return np.ascontiguousarray((A * s).T), c * s


def _rows_dot(x, F):
    """x (c, d) @ F.T (k, d) -> (c, k) float64 without BLAS threads: these products are small and run hundreds of
    times per step, where a multi-threaded BLAS competing with torch's threads was measured 100x slower."""
    return np.einsum("cd,kd->ck", x, F)


def _hmc_trajectory(F, g, z, v, travel=HMC_TIME, gram=None):
    """Exact HMC for N(0, I) truncated to {F z + g > 0}: (c, d) positions and velocities -> (end points, ok).

    The free motion is x(t) = z cos t + v sin t; wall i (value a cos t + b sin t + g_i, with a = F z, b = F v) is
    left at t = atan2(b, a) + arccos(-g_i / hypot(a, b)) when that exists; the velocity is reflected at the
    earliest wall. a and b move with the particle (a rotation, and a reflection adds a column of the Gram matrix
    F F^T), so a bounce costs O(k + d) per chain instead of O(k d); they are recomputed from z, v every
    RESYNC_BOUNCES bounces so that rounding cannot drift.
    """
    z, v = z.copy(), v.copy()
    gram = F @ F.T if gram is None else gram  # (k, k)
    fnorm2 = np.diag(gram)
    a, b = _rows_dot(z, F), _rows_dot(v, F)  # (c, k)
    left = np.full(len(z), travel)
    done = np.zeros(len(z), bool)
    ok = np.ones(len(z), bool)
    for bounce in range(MAX_BOUNCES):
        act = np.flatnonzero(~done)
        if not act.size:
            break
        if bounce and bounce % RESYNC_BOUNCES == 0:
            a[act], b[act] = _rows_dot(z[act], F), _rows_dot(v[act], F)
        aa, bb = a[act], b[act]
        rho = np.hypot(aa, bb)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = -g / rho
            t = np.mod(np.arctan2(bb, aa) + np.arccos(np.clip(ratio, -1.0, 1.0)), 2 * math.pi)
        t[~(np.abs(ratio) < 1.0)] = np.inf  # the wall's value never reaches 0 on this ellipse
        t[t < 1e-10] = np.inf  # the wall just reflected off (the particle sits on it, moving inward)
        wall = t.argmin(1)
        hit = t[np.arange(len(act)), wall]
        free = hit >= left[act]
        tt = np.where(free, left[act], hit)[:, None]
        cos, sin = np.cos(tt), np.sin(tt)
        za, va = z[act], v[act]
        z[act] = za * cos + va * sin
        vel = va * cos - za * sin
        aa, bb = aa * cos + bb * sin, bb * cos - aa * sin
        rows = np.flatnonzero(~free)  # reflect v off wall w: v -= 2 (v . f_w) / |f_w|^2 f_w, and b = F v with it
        w = wall[rows]
        coef = 2.0 * bb[rows, w] / fnorm2[w]  # (v . f_w) is b_w
        vel[rows] -= coef[:, None] * F[w]
        bb[rows] -= coef[:, None] * gram[w]
        v[act], a[act], b[act] = vel, aa, bb
        left[act] -= tt[:, 0]
        done[act[free]] = True
    ok[~done] = False
    return z, ok


def _chord(F, g, z, u, low=-np.inf, high=np.inf):
    """Parameter interval (lo, hi) of the line z + t u inside {F z + g > 0} and the box [low, high]^d."""
    m, w = _rows_dot(z, F) + g, _rows_dot(u, F)  # (c, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = -m / w
    lo = np.where(w > 0, r, -np.inf).max(1, initial=-np.inf)  # initial: no walls (k = 0) -> unbounded
    hi = np.where(w < 0, r, np.inf).min(1, initial=np.inf)
    if np.isfinite(low):
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (low - z) / u, (high - z) / u
        lo = np.maximum(lo, np.where(u != 0, np.minimum(a, b), -np.inf).max(1))
        hi = np.minimum(hi, np.where(u != 0, np.maximum(a, b), np.inf).min(1))
    return np.minimum(lo, 0.0), np.maximum(hi, 0.0)


# ------------------------------------------------------------------------------ piecewise-affine regions
_PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU)  # two affine pieces each: slope 1 above 0, `slope` below
MAX_JACOBIAN = 4e7  # selected units x hidden units stored as float64 (320 MB): above it, fall back to slice


@dataclass
class PiecewiseAffine:
    """The region {z : L act(A z + c) + e > 0}: one hidden piecewise-linear activation act (ReLU: slope 0 below
    zero, LeakyReLU: its negative slope) between two affine maps. Rows of L and e are signed as at the query."""

    A: np.ndarray  # (m, d) hidden pre-activations from z
    c: np.ndarray  # (m,)
    slope: float  # act(p) = p for p > 0, slope * p otherwise
    L: np.ndarray  # (k, m) the selected units' sign-deciding values from the hidden activations
    e: np.ndarray  # (k,)

    def values(self, Z):
        """(n, d) -> (n, k) signed sign-deciding values (> 0 inside)."""
        P = Z @ self.A.T + self.c
        return np.where(P > 0, P, self.slope * P) @ self.L.T + self.e


def _first_activation(region):
    """(name, module, per-sample shape) of the first ReLU / LeakyReLU (negative slope >= 0) that runs before the
    layer on the query's forward, or None (none, or one called more than once)."""
    from .layers import prefix_output

    names = {m: n for n, m in region.model.named_modules()}
    order, handles = [], []
    for module, name in names.items():
        if isinstance(module, _PIECEWISE_LINEAR) and module is not region._module:
            handles.append(module.register_forward_pre_hook(lambda m, inputs: order.append((m, inputs[0].shape))))
    try:
        prefix_output(region.model, region._module, region.layer, region._to_model(region._query_t[None]),
                      capture="input")
    finally:
        for h in handles:
            h.remove()
    if not order or [m for m, _ in order].count(order[0][0]) > 1:
        return None
    module, shape = order[0]
    if isinstance(module, nn.LeakyReLU) and not module.negative_slope >= 0:
        return None
    return names[module], module, tuple(shape[1:])


def piecewise_affine(region, n_checks=16, seed=0):
    """`PiecewiseAffine` of the region, or None where the prefix is not affine -> ReLU -> affine in z.

    A, c: the hidden activation's input read at the query and query + e_j (d + 1 forwards) and checked on random
    points; L: the Jacobian of the selected units' sign-deciding values with respect to the hidden activation's
    output (one batched forward and backward with k rows); then the whole composition is checked against the
    model's own values at `n_checks` prior samples and points near the query. Also returns the forwards spent.
    """
    from .layers import evaluating, one_thread, prefix_output, prefix_output_replacing

    spec = _sign_spec(region)
    if spec is None:
        return None, 0
    capture = spec[0]
    found = _first_activation(region)
    if found is None:
        return None, 1
    mid_name, mid, mid_shape = found
    model, d, k = region.model, region.dim, len(region.units)
    q = region.query.astype(np.float64)
    slope = float(mid.negative_slope) if isinstance(mid, nn.LeakyReLU) else 0.0

    with evaluating(model), one_thread():  # no thread-count dependent rounding in the coefficients
        sv = SignedValues(region, spec)  # the model's own values: their signs at the query define the region

        def hidden(Z):  # (n, d) -> (n, m) the hidden activation's input
            return prefix_output(model, mid, mid_name, region._to_model(torch.from_numpy(Z)), eval_mode=False,
                                 capture="input").double().cpu().numpy()

        fit = _affine_fit(hidden, q, n_checks, seed)
        spent = 2 + d + n_checks
        if fit is None or k * fit[0].shape[1] > MAX_JACOBIAN:
            return None, spent
        A, c, p0 = fit
        m = len(c)
        h0 = torch.from_numpy(np.where(p0 > 0, p0, slope * p0))  # the hidden output at the query
        L = np.empty((k, m))
        dtype, device = region._dtype, region.device
        zq = region._to_model(region._query_t[None])
        for start in range(0, k, 256):  # one row of the Jacobian per batch row
            rows = sv.units[start:start + 256]
            x = h0.to(device, dtype).expand(len(rows), m).reshape(len(rows), *mid_shape).clone().requires_grad_()
            out = prefix_output_replacing(model, region._module, region.layer, zq.expand(len(rows), *zq.shape[1:]),
                                          mid, x, capture=capture)
            out.gather(1, rows.to(out.device)[:, None]).sum().backward()
            L[start:start + len(rows)] = x.grad.reshape(len(rows), m).double().cpu().numpy()
        spent += 3 * k  # a forward and a backward per row: about three forwards' work
        e = sv.at_query - h0.numpy() @ L.T
        rng = np.random.default_rng(seed + 1)
        Z = np.vstack([rng.standard_normal((n_checks // 2, d)), q + 0.5 * rng.standard_normal((n_checks // 2, d))])
        got = sv.raw(Z)
        spent += 1 + n_checks
    pw = PiecewiseAffine(np.ascontiguousarray(A.T), c, slope, L, e)
    predicted = pw.values(Z)
    scale = np.abs(got).max() + 1e-6
    if not np.abs(got - predicted).max() <= 1e-4 * scale:
        return None, spent
    pw.L, pw.e = pw.L * sv.sign[:, None], pw.e * sv.sign
    return pw, spent


# --------------------------------------------------------------------------------- any layer: reflective HMC
REFLECT_CHECKS = 32  # membership checks per quarter turn of free motion (a check every ~0.05 of travel time)
REFLECT_TOL = 1e-5  # a wall's hit time is bracketed to this (travel time; ~1e-4 in latent distance)
REFLECT_MAX_SEARCH = 60  # bracketing steps per wall before the trajectory is abandoned (chain stays put)
# positions of a trajectory kept in `RegionSampler.visited` (explore's targets), at travel times T k / 16: with all
# 32 checked positions the targets of a 500-node tree came from 16 trajectories and its nodes traced 16 curves; 16
# instead of 8 (2,000 nodes, keep 5%, same reach / diversity / spread against sample_region): face main.5 18.6 ->
# 12.7 s, mnist main.11 29.3 -> 17.9 s
VISITS_PER_TRAJECTORY = 16


class SignedValues:
    """The region's sign-deciding values as seen by the model, signed as at the query (> 0: that unit agrees),
    for any prefix: `values(Z)` (n, d) -> (n, k) float64 and `gradient(Z, unit)` -> (n, d), row r the gradient of
    unit[r]'s value at Z[r] (one batched forward and backward). For a sign-preserving activation at threshold 0
    the value is the activation's input (a ReLU's output is flat where the unit is off: no gradient to reflect on)."""

    def __init__(self, region, spec=None):
        spec = spec or _sign_spec(region) or ("output", region.threshold)
        self.region, (self.capture, self.shift) = region, spec
        self.units = torch.tensor(np.asarray(region.units))  # a copy: the units array is read-only
        self.at_query = v0 = self.raw(region.query.astype(np.float64)[None])[0]
        self.sign = np.where(v0 > 0, 1.0, -1.0)
        self.on = v0 > 0  # membership: value > 0 for units on at the query, <= 0 for units off

    def _raw(self, Z, grad=False):
        from .layers import evaluating, prefix_output

        region = self.region
        with evaluating(region.model):
            out = prefix_output(region.model, region._module, region.layer, region._to_model(Z), eval_mode=False,
                                capture=self.capture, grad=grad)
        return out.index_select(1, self.units.to(out.device)) - self.shift

    def raw(self, Z):
        """(n, d) float64 -> (n, k) float64 sign-deciding values, unsigned (as the layer computes them)."""
        return self._raw(torch.from_numpy(np.ascontiguousarray(Z))).double().cpu().numpy()

    def values(self, Z):
        return self.raw(Z) * self.sign

    def inside(self, V):
        """(n, k) signed values -> (n,) membership exactly as the region decides it."""
        return np.where(self.on, V > 0, V >= 0).all(1)

    def gradient(self, Z, unit):
        Zt = torch.from_numpy(np.ascontiguousarray(Z)).requires_grad_()
        out = self._raw(Zt, grad=True)
        rows = torch.arange(len(Z))
        picked = (out[rows, torch.from_numpy(unit)].double() * torch.from_numpy(self.sign[unit])).sum()
        return torch.autograd.grad(picked, Zt)[0].double().numpy()  # only the input's gradient: no weight grads


def _motion(z0, v0, t, box=None):
    """Positions and velocities at times t (n,) of the free motion from (z0, v0) (n, d): under N(0, I) the
    rotation z0 cos t + v0 sin t; under a uniform prior on box = (low, high) the straight line z0 + v0 t, reflected
    off the box's faces (each coordinate folds back and forth between low and high: specular billiard, exact)."""
    t = t[:, None]
    if box is None:
        c, s = np.cos(t), np.sin(t)
        return z0 * c + v0 * s, -z0 * s + v0 * c
    low, high = box
    width = high - low
    y = np.mod(z0 + v0 * t - low, 2 * width)  # position along the unfolded line, one period = there and back
    back = y > width
    return np.clip(np.where(back, low + 2 * width - y, low + y), low, high), np.where(back, -v0, v0)


def _reflective_trajectories(sv, z, v, travel=HMC_TIME, checks=REFLECT_CHECKS, box=None):
    """HMC for N(0, I) (or a uniform prior on box = (low, high)) restricted to the region of `sv` (a
    `SignedValues`), any prefix, all chains at once:
    (C, d) z, v -> (C, d) end points, (C,) ok, number of model evaluations, (C, checks, d) positions at the
    check times k travel / checks (the last: the end point). Each was evaluated inside, and each is a draw of the
    restricted prior where z is (the flow keeps that distribution at every fixed time): explore takes them all
    as targets, sample_region only the ends.

    The free motion is z cos t + v sin t (a uniform prior: straight lines folded at the box's faces, `_motion`).
    Every chain checks its membership `checks` times per trajectory; when a
    check lands outside, the exit time in the last interval is bracketed to REFLECT_TOL (regula falsi, Illinois
    variant, on the value of the unit found outside; the side chosen by membership), and the particle reflects
    there off that unit's gradient (the wall's normal; reflective HMC, Mohasel Afshar & Domke, NeurIPS 2015).
    One batched forward per round serves every chain, whether checking or bracketing. Unlike the closed-form
    kernels, an excursion outside that starts and ends between two checks is not seen: a wall thinner than a
    check interval can be crossed. The tests measure the bias against exact samplers.
    """
    C, k = len(z), len(sv.sign)
    z0, v0 = z.copy(), v.copy()  # the current segment's start
    left = np.full(C, float(travel))  # travel time left from the segment's start
    t_in, t_out = np.zeros(C), np.full(C, np.nan)  # last time seen inside on the segment; bracket's outside end
    V_in, V_out = np.full((C, k), np.nan), np.zeros((C, k))  # signed values there (start: unknown -> bisection)
    unit = np.zeros(C, np.int64)  # the unit found outside at t_out (the one most outside)
    scale = np.ones((C, 2))  # Illinois: the value of an end kept twice in a row is halved (inside, outside)
    side = np.zeros(C, np.int8)  # which end moved last: 1 inside, -1 outside
    searched, bounces = np.zeros(C, np.int64), np.zeros(C, np.int64)
    ok, done = np.ones(C, bool), np.zeros(C, bool)
    evaluations, dt = 0, travel / checks
    path = np.zeros((C, checks, z.shape[1]))  # the positions at the check times k dt of the whole trajectory
    while not done.all():
        a = np.flatnonzero(~done)
        bracketing = ~np.isnan(t_out[a])
        begun = travel - left[a]  # the segment's start in trajectory time: checks stay on the grid k dt
        grid = np.floor((begun + t_in[a]) / dt + 1e-9) + 1  # the next grid point after the last inside time
        t = np.minimum(grid * dt - begun, left[a])
        b = a[bracketing]
        lo, hi, u = t_in[b], t_out[b], unit[b]
        f_lo, f_hi = V_in[b, u] * scale[b, 0], V_out[b, u] * scale[b, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            guess = lo + (hi - lo) * f_lo / (f_lo - f_hi)  # where the line through both ends crosses 0
        width = hi - lo
        # regula falsi where the unit's values straddle 0; else (unknown, or flat at 0 inside: a max-pool of dead
        # units) bisection
        t[bracketing] = np.where((f_lo > 0) & (f_hi < 0), np.clip(guess, lo + 0.01 * width, hi - 0.01 * width),
                                 lo + 0.5 * width)
        P = _motion(z0[a], v0[a], t, box)[0]
        V = sv.values(P.astype(np.float32).astype(np.float64))
        evaluations += len(a)
        searched[b] += 1
        ins = sv.inside(V)
        i, o = a[ins], a[~ins]
        scale[i[side[i] == 1], 1] *= 0.5  # the outside end kept twice: halve its value
        scale[o[side[o] == -1], 0] *= 0.5  # the inside end kept twice
        scale[i, 0] = 1.0
        t_in[i], V_in[i], side[i] = t[ins], V[ins], 1
        checked = ~bracketing[ins]
        path[i[checked], np.minimum(grid[ins][checked], checks).astype(np.int64) - 1] = P[ins][checked]
        done[i[checked & (t[ins] >= left[i])]] = True
        new_unit = V[~ins].argmin(1)
        scale[o[new_unit != unit[o]]] = 1.0
        t_out[o], V_out[o], unit[o], side[o] = t[~ins], V[~ins], new_unit, -1
        scale[o, 1] = 1.0
        # a bracket narrow enough: reflect at its inside end off the exiting unit's gradient
        lost = a[searched[a] > REFLECT_MAX_SEARCH]
        ok[lost], done[lost] = False, True
        hit = a[(t_out[a] - t_in[a] <= REFLECT_TOL) & ~done[a]]  # NaN (not bracketing) compares False
        if hit.size:
            zh, vh = _motion(z0[hit], v0[hit], t_in[hit], box)
            normal = sv.gradient(zh.astype(np.float32).astype(np.float64), unit[hit])
            evaluations += 3 * len(hit)  # a forward and a backward: about three forwards' work
            into, norm2 = (vh * normal).sum(1), (normal * normal).sum(1)  # into < 0: leaving through this wall
            good = (into < 0) & (norm2 > 0)
            vh[good] -= (2 * into[good] / norm2[good])[:, None] * normal[good]
            vh[~good] *= -1  # a kink at the wall (another piece's gradient): turn back, still reversible
            z0[hit], v0[hit], left[hit] = zh, vh, left[hit] - t_in[hit]
            t_in[hit], t_out[hit], side[hit], searched[hit], scale[hit] = 0.0, np.nan, 0, 0, 1.0
            bounces[hit] += 1
            stuck = hit[bounces[hit] > MAX_BOUNCES]
            ok[stuck], done[stuck] = False, True
    return _motion(z0, v0, left, box)[0], ok, evaluations, path

# ------------------------------------------------------------------------------------------------- sampler
class RegionSampler:
    """`chains` Markov chains on the prior restricted to `region`, all started at the query, advanced together.

    `step()` moves every chain once and returns the (chains, d) float32 states, each evaluated inside; `visited`
    then holds every state the step evaluated inside that is a draw of the target where the chain's start is: the
    new states, and for the piecewise and reflective kernels 16 positions of each trajectory at fixed times
    (explore's targets: each is a draw of the target where the chain's start is, as the flow keeps it).
    `evaluations` counts latents whose membership was evaluated (the model's prefix forwards), set-up included.
    """

    def __init__(self, region, chains=64, prior=None, box=(-1.0, 1.0), seed=0, method="auto"):
        check_region(region)
        self.region = region
        self.prior = as_prior(prior, box, region)
        self.chains = positive_int(chains, "chains")
        self.rng = np.random.default_rng(check_seed(seed))
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
        if method == "piecewise" and self.prior.kind != "normal":
            raise ValueError("method='piecewise' samples the normal prior; use method='reflective' (or 'auto') for "
                             "a uniform prior")
        q = np.asarray(region.query, np.float64)
        if self.prior.kind == "uniform" and not ((q >= self.prior.low) & (q <= self.prior.high)).all():
            raise ValueError(f"the query lies outside the prior's box [{self.prior.low}, {self.prior.high}]^d")
        self.evaluations = 0
        self.F = self.g = self.gram = self.pw = self.hmc = self.sv = None
        if method in ("auto", "polytope") and hasattr(region, "_module"):
            poly = polytope(region, seed=seed)
            self.evaluations += region.dim + 2 + 16  # the query, q + e_j, 16 checks
            if poly is not None:
                self.F, self.g = poly
                self.gram = self.F @ self.F.T  # (k, k): how a reflection off one wall moves the others
        if method == "polytope" and self.F is None:
            raise ValueError(f"method='polytope': the prefix up to layer {getattr(region, 'layer', '?')!r} is not "
                             "affine in the latent; use method='slice' (or 'auto')")
        if (method == "piecewise" or (method == "auto" and self.F is None and self.prior.kind == "normal")) \
                and hasattr(region, "_module"):
            self.pw, spent = piecewise_affine(region, seed=seed)
            self.evaluations += spent
        if method == "piecewise" and self.pw is None:
            raise ValueError(f"method='piecewise': the prefix up to layer {getattr(region, 'layer', '?')!r} is not "
                             "affine -> ReLU -> affine in the latent; use method='slice' (or 'auto')")
        if (method == "reflective" or (method == "auto" and self.F is None and self.pw is None)) \
                and hasattr(region, "_module"):
            self.sv = SignedValues(region)
            self.evaluations += 1
        if method == "reflective" and self.sv is None:
            raise ValueError("method='reflective' needs a GenerativeRegion (a model layer's signs); use 'slice'")
        self.method = ("polytope" if self.F is not None else "piecewise" if self.pw is not None
                       else "reflective" if self.sv is not None else "slice")
        self.z = np.repeat(q[None], self.chains, 0)  # (C, d) float64
        self._visited, self._unchecked = self.z.astype(np.float32), 0  # rows of _visited not yet evaluated
        self.moves = 0  # accepted moves (a polytope move the model rejects leaves the chain in place)

    def use_chains(self, chains):
        """Keep the first `chains` chains; only before the first step (every chain still sits at the query)."""
        if self.moves or len(np.unique(self.z, axis=0)) > 1:
            raise RuntimeError("use_chains after a step would drop states: call it before sampling")
        self.z = np.repeat(self.z[:1], positive_int(chains, "chains"), 0)
        self.chains = len(self.z)

    def _contains(self, Z):
        self.evaluations += len(Z)
        return np.asarray(self.region.contains(np.ascontiguousarray(Z, np.float32)), bool)

    def step(self):
        C, d = self.z.shape
        if self.method in ("polytope", "piecewise", "reflective"):
            if self.method == "piecewise":
                prop, ok, path = self._piecewise(self.rng.standard_normal((C, d)))
            elif self.method == "reflective":
                box = None if self.prior.kind == "normal" else (self.prior.low, self.prior.high)
                travel = HMC_TIME if box is None else UNIFORM_TRAVEL * (box[1] - box[0])
                prop, ok, spent, path = _reflective_trajectories(self.sv, self.z, self.rng.standard_normal((C, d)),
                                                                 travel, box=box)
                self.evaluations += spent
            elif self.prior.kind == "normal":
                prop, ok = _hmc_trajectory(self.F, self.g, self.z, self.rng.standard_normal((C, d)), gram=self.gram)
            else:
                u = self.rng.standard_normal((C, d))
                lo, hi = _chord(self.F, self.g, self.z, u, self.prior.low, self.prior.high)
                prop, ok = self.z + self.rng.uniform(lo, hi)[:, None] * u, np.ones(C, bool)
            prop = prop.astype(np.float32).astype(np.float64)  # the latents the model sees are float32
            ok[ok] = self._contains(prop[ok])
            self.z[ok] = prop[ok]
            self.moves += int(ok.sum())
            if self.method in ("piecewise", "reflective"):  # time-major: consecutive rows are other chains
                if self.method == "reflective":  # every checked position was evaluated inside: keep every 4th
                    every = REFLECT_CHECKS // VISITS_PER_TRAJECTORY
                    path = path[:, every - 1::every]
                self._visited = np.ascontiguousarray(path[ok].transpose(1, 0, 2).reshape(-1, d), np.float32)
                # piecewise positions come from the affine pieces: the model has the last word, when asked; the
                # last time's rows are the accepted ends, already evaluated
                self._unchecked = (VISITS_PER_TRAJECTORY - 1) * int(ok.sum()) if self.method == "piecewise" else 0
                return self.z.astype(np.float32)
        elif self.prior.kind == "normal":
            self._elliptical_slice()
        else:
            self._box_slice()
        self._visited, self._unchecked = self.z.astype(np.float32), 0
        return self._visited.copy()

    @property
    def visited(self):
        """The last step's states drawn from the target (see the class): (m, d) float32, each evaluated inside."""
        if self._unchecked:  # the first rows are evaluated on first access only: sample_region never asks
            keep = np.ones(len(self._visited), bool)
            keep[:self._unchecked] = self._contains(self._visited[:self._unchecked])
            self._visited, self._unchecked = self._visited[keep], 0
        return self._visited

    def _piecewise(self, v):
        if self.hmc is None:  # every chain starts at the query, in the query's piece
            from . import core

            pw = self.pw
            self.hmc = core.PiecewiseHMC(pw.A, pw.c, pw.slope, pw.L, pw.e,
                                         np.where(pw.A @ self.z[0] + pw.c > 0, 1.0, pw.slope))
        end, bounces, path = self.hmc.run(self.z, v, HMC_TIME, MAX_BOUNCES, VISITS_PER_TRAJECTORY)
        return end, bounces >= 0, path

    def _shrink(self, propose, lo, hi, t):
        """Neal's shrinkage, batched: propose(rows, t) -> points; bracket [lo, hi] shrinks toward 0 until inside."""
        active = np.arange(len(self.z))
        while active.size:
            pts = propose(active, t[active])
            ins = self._contains(pts)
            self.z[active[ins]] = pts[ins].astype(np.float32)
            out, tt = active[~ins], t[active[~ins]]
            lo[out] = np.where(tt < 0, tt, lo[out])
            hi[out] = np.where(tt < 0, hi[out], tt)
            t[out] = self.rng.uniform(lo[out], hi[out])
            active = out
        self.moves += len(self.z)

    def _elliptical_slice(self):
        z0, nu = self.z.copy(), self.rng.standard_normal(self.z.shape)
        theta = self.rng.uniform(0.0, 2 * math.pi, len(z0))
        self._shrink(lambda rows, th: z0[rows] * np.cos(th)[:, None] + nu[rows] * np.sin(th)[:, None],
                     theta - 2 * math.pi, theta.copy(), theta)

    def _box_slice(self):
        z0, u = self.z.copy(), self.rng.standard_normal(self.z.shape)
        lo, hi = _chord(np.zeros((0, z0.shape[1])), np.zeros(0), z0, u, self.prior.low, self.prior.high)
        t = self.rng.uniform(lo, hi)
        self._shrink(lambda rows, tt: z0[rows] + tt[:, None] * u[rows], lo, hi, t)


# ------------------------------------------------------------------------------------------------ diagnostics
def split_rhat_ess(x):
    """x (draws, chains) -> (split R-hat, effective sample size), as Stan computes them (no rank normalisation).

    Each chain is split in two halves; ESS uses the multi-chain autocorrelation and Geyer's initial positive
    (monotone) sequence. Constant draws give (1.0, draws * chains)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0] // 2
    if n < 2:
        return float("nan"), float("nan")
    x = np.concatenate([x[:n], x[x.shape[0] - n:]], axis=1)  # (n, 2C) split chains
    m = x.shape[1]
    means = x.mean(0)
    W = x.var(0, ddof=1).mean()
    B_over_n = means.var(ddof=1)
    var_plus = (n - 1) / n * W + B_over_n
    if var_plus <= 0 or W <= 0:
        return 1.0, float(n * m)
    rhat = math.sqrt(var_plus / W)
    centred = x - means
    acov = np.array([(centred[:n - t] * centred[t:]).sum(0) / n for t in range(n)]).mean(1)  # (n,) over chains
    rho = 1.0 - (W - acov) / var_plus
    rho[0] = 1.0
    tau, prev = -1.0, np.inf
    for k in range(0, n - 1, 2):
        pair = rho[k] + rho[k + 1]
        if pair <= 0:
            break
        pair = min(pair, prev)  # initial monotone sequence
        tau += 2.0 * pair
        prev = pair
    return rhat, float(n * m / max(tau, 1.0 / math.log10(n * m + 10)))


# ------------------------------------------------------------------------------------------------- public API
@dataclass
class RegionSamples:
    """Samples of the prior restricted to the region; every row was evaluated inside."""

    latents: np.ndarray  # (n, d) float32, ordered by draw then chain
    chain: np.ndarray  # (n,) int64: the chain each row comes from
    method: str  # "polytope" (exact HMC / chords on the affine prefix) or "slice" (membership only)
    prior: Prior
    chains: int
    warmup: int  # draws (trajectories) per chain discarded before the kept ones
    draws: int  # kept draws per chain
    evaluations: int  # membership evaluations in all (set-up and warm-up included)
    rhat: float  # worst split R-hat over the monitored statistics
    ess: float  # smallest effective sample size over them
    seconds: float

    @property
    def evaluations_per_effective_sample(self):
        return self.evaluations / self.ess if self.ess > 0 else float("inf")

    @property
    def well_mixed(self):
        return bool(self.rhat <= RHAT_WARN and self.ess >= ESS_WARN * len(self.latents))

    def diagnostics(self):
        """The numbers a report or a sweep row records."""
        def finite(v):  # JSON has no NaN / inf
            return float(v) if math.isfinite(v) else None

        return {"method": self.method, "prior": self.prior.kind, "chains": self.chains, "warmup": self.warmup,
                "draws": self.draws, "evaluations": self.evaluations, "rhat": finite(self.rhat),
                "ess": finite(self.ess),
                "evaluations_per_effective_sample": finite(self.evaluations_per_effective_sample),
                "well_mixed": self.well_mixed, "seconds": self.seconds}


def default_warmup(method):
    """Draws per chain discarded from the query's start: exact HMC forgets it in a few trajectories; the
    membership-only slice kernels move by a boundary distance per step and need many more. A piecewise trajectory
    costs ~100 forwards' work (face DCGAN main.5), so it gets fewer warm-up draws: its first one already reaches
    the region's typical distance from the query."""
    return {"polytope": 20, "piecewise": 10, "reflective": 5}.get(method, 100)


def default_chains(method, n):
    """Chains advanced together: n/8 (at least 8 draws each, to measure mixing), at most 64; at most 16 for the
    piecewise and reflective kernels, whose warm-up trajectories are expensive and whose draws are nearly
    independent."""
    return max(1, min(16 if method in ("piecewise", "reflective") else 64, n // 8))


def sample_region(region, n=500, *, seed=0, prior=None, box=(-1.0, 1.0), chains=None, warmup=None,
                  method="auto", progress=True):
    """n latents of the prior restricted to `region` (see the module docstring), every one evaluated inside.

    prior: "normal" (N(0, I)) or "uniform" on `box` = (low, high) per coordinate; None (default): uniform on the
    region's `bounds` where it has them (a classifier's pixel box), else N(0, I). chains: Markov chains
    advanced together (default n/8, at most 64, at most 16 for "piecewise" and "reflective": see `default_chains`);
    warmup: draws per chain discarded first (default 20 for "polytope", 10 for "piecewise", 5 for "reflective", 100
    for the slice kernels); method: "auto" (the first that applies of "polytope", "piecewise" and "reflective" for
    a normal prior, "slice"), or one of them.
    Same seed -> same samples. A RuntimeWarning says when the measured mixing is poor (split R-hat > 1.1 or
    fewer than n/10 effective samples): raise warmup, or use more chains.
    """
    check_region(region)
    n = positive_int(n, "n")
    seed = check_seed(seed)
    default = chains is None
    chains = default_chains("slice", n) if default else positive_int(chains, "chains")
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    t0 = time.perf_counter()
    sampler = RegionSampler(region, chains=chains, prior=prior, box=box, seed=seed, method=method)
    if default and default_chains(sampler.method, n) != chains:
        chains = default_chains(sampler.method, n)
        sampler.use_chains(chains)
    warmup = default_warmup(sampler.method) if warmup is None else warmup
    draws = -(-n // chains)
    from tqdm.auto import tqdm

    bar = tqdm(total=warmup + draws, disable=not progress, desc="sample_region", unit="draw", leave=False)
    for _ in range(warmup):
        sampler.step()
        bar.update(1)
    kept = []
    for _ in range(draws):
        kept.append(sampler.step())
        bar.update(1)
    bar.close()
    kept = np.stack(kept)  # (draws, C, d)
    rhat, ess = _mixing(kept, region.query, seed)
    latents = np.ascontiguousarray(kept.reshape(-1, kept.shape[2])[:n])
    chain = np.tile(np.arange(chains, dtype=np.int64), draws)[:n]
    out = RegionSamples(latents=latents, chain=chain, method=sampler.method, prior=sampler.prior, chains=chains,
                        warmup=warmup, draws=draws, evaluations=sampler.evaluations, rhat=rhat, ess=ess,
                        seconds=time.perf_counter() - t0)
    if draws >= 4 and not out.well_mixed:
        warnings.warn(f"sample_region mixes poorly on this region (split R-hat {rhat:.3g}, {ess:.0f} effective of "
                      f"{n} samples, {sampler.method} kernel): raise warmup= or chains=", RuntimeWarning,
                      stacklevel=2)
    return out


def _mixing(kept, query, seed, n_directions=4):
    """Worst split R-hat and smallest ESS over: distance from the query and projections on random directions."""
    rng = np.random.default_rng(seed + 1)
    u = rng.standard_normal((kept.shape[2], n_directions))
    u /= np.linalg.norm(u, axis=0)
    stats = [np.linalg.norm(kept - query, axis=2)] + list(np.moveaxis(kept @ u, 2, 0))
    pairs = [split_rhat_ess(s) for s in stats]
    return max(p[0] for p in pairs), min(p[1] for p in pairs)
