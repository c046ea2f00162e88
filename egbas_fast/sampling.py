"""The latent prior restricted to a generative region: what the layer leaves free, sampled exactly by MCMC.

Target: p(z) ∝ prior(z) · 1[z in region], prior N(0, I) (default) or uniform on a box. Many chains start at the
query (inside by definition) and move together: one batched forward of the layer prefix evaluates every chain's
proposal. Every returned latent was evaluated inside by `region.contains`.

Two kernels, chosen automatically (`method="auto"`):
  * "polytope": where the prefix is affine in z (e.g. the first Linear/ConvTranspose + BatchNorm before a ReLU) the
    region is a polytope {F z + g > 0}, read off the model with d + 1 forwards and verified on random points.
    Normal prior: exact Hamiltonian Monte Carlo for truncated Gaussians (Pakman & Paninski, "Exact Hamiltonian
    Monte Carlo for Truncated Multivariate Gaussians", JCGS 2014): the particle follows the ellipse
    z cos t + v sin t for t = π/2 and reflects off each wall it meets (hit times in closed form). Hit-and-run
    mixes badly in these long thin polytopes (face DCGAN main.2, keep 5%: autocorrelation ~0.55 at lag 200);
    the bouncing particle crosses one in a single trajectory. Box prior: hit-and-run with closed-form chords.
    Each end point is then evaluated by the model itself; a move the model calls outside (float rounding at a
    wall) is rejected, so the chain stays exact for the model's own region.
  * "slice" (any layer, any model; membership only): normal prior: elliptical slice sampling (Murray, Adams,
    MacKay, AISTATS 2010) with the region's indicator as likelihood: exact, no step size; box prior: slice
    sampling along a random chord of the box with Neal's shrinkage toward the current point.

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
def polytope(region, n_checks=16, seed=0):
    """(F, g) float64 with the region = {z : F z + g > 0} (rows: the selected units, signed as at the query),
    or None where the values that decide the units' signs are not affine in z (checked on random points).

    The sign-deciding values are the layer's input for a sign-preserving activation at threshold 0 (ReLU, ...),
    else the layer's output minus the threshold. They are read at the query and at the query + e_j (d + 1
    forwards), then compared with the affine prediction at `n_checks` prior samples and points near the query.
    """
    from .layers import evaluating, prefix_output

    module = region._module
    if isinstance(module, nn.LeakyReLU) and module.negative_slope <= 0:
        return None
    use_input = isinstance(module, _SIGN_PRESERVING) and region.threshold == 0.0
    shift = 0.0 if use_input else region.threshold
    units = torch.tensor(np.asarray(region.units))  # a copy: the units array is read-only

    def values(Z):  # (n, d) float64 -> (n, k) float64 sign-deciding values of the selected units
        with evaluating(region.model):
            out = prefix_output(region.model, module, region.layer, region._to_model(torch.from_numpy(Z)),
                                eval_mode=False, capture="input" if use_input else "output")
        return out.index_select(1, units.to(out.device)).double().cpu().numpy() - shift

    d, q = region.dim, region.query.astype(np.float64)
    try:
        V = values(np.vstack([q, q + np.eye(d)]))  # (d+1, k)
    except Exception:  # a module whose input is not one tensor, etc.: not our affine case
        return None
    A = V[1:] - V[0]  # (d, k): the column of unit i is its gradient
    c = V[0] - q @ A  # (k,)
    rng = np.random.default_rng(seed)
    Z = np.vstack([rng.standard_normal((n_checks // 2, d)), q + 0.5 * rng.standard_normal((n_checks // 2, d))])
    got, predicted = values(Z), Z @ A + c
    scale = np.abs(got).max() + np.abs(A).sum(0).max() + 1e-6
    if not np.abs(got - predicted).max() <= 1e-4 * scale:  # float32 forwards agree to ~1e-6 of the scale
        return None
    s = np.where(V[0] > 0, 1.0, -1.0)  # on at the query: F z + g > 0 keeps it on; off: keeps it off
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


# ------------------------------------------------------------------------------------------------- sampler
class RegionSampler:
    """`chains` Markov chains on the prior restricted to `region`, all started at the query, advanced together.

    `step()` moves every chain once and returns the (chains, d) float32 states, each evaluated inside.
    `evaluations` counts latents whose membership was evaluated (the model's prefix forwards), set-up included.
    """

    def __init__(self, region, chains=64, prior=None, box=(-1.0, 1.0), seed=0, method="auto"):
        check_region(region)
        self.region = region
        self.prior = as_prior(prior, box, region)
        self.chains = positive_int(chains, "chains")
        self.rng = np.random.default_rng(check_seed(seed))
        if method not in ("auto", "polytope", "slice"):
            raise ValueError(f"method must be 'auto', 'polytope' or 'slice', got {method!r}")
        q = np.asarray(region.query, np.float64)
        if self.prior.kind == "uniform" and not ((q >= self.prior.low) & (q <= self.prior.high)).all():
            raise ValueError(f"the query lies outside the prior's box [{self.prior.low}, {self.prior.high}]^d")
        self.evaluations = 0
        self.F = self.g = self.gram = None
        if method != "slice" and hasattr(region, "_module"):
            poly = polytope(region, seed=seed)
            self.evaluations += region.dim + 1 + 16
            if poly is not None:
                self.F, self.g = poly
                self.gram = self.F @ self.F.T  # (k, k): how a reflection off one wall moves the others
        if method == "polytope" and self.F is None:
            raise ValueError(f"method='polytope': the prefix up to layer {getattr(region, 'layer', '?')!r} is not "
                             "affine in the latent; use method='slice' (or 'auto')")
        self.method = "polytope" if self.F is not None else "slice"
        self.z = np.repeat(q[None], self.chains, 0)  # (C, d) float64
        self.moves = 0  # accepted moves (a polytope move the model rejects leaves the chain in place)

    def _contains(self, Z):
        self.evaluations += len(Z)
        return np.asarray(self.region.contains(np.ascontiguousarray(Z, np.float32)), bool)

    def step(self):
        C, d = self.z.shape
        if self.method == "polytope":
            if self.prior.kind == "normal":
                prop, ok = _hmc_trajectory(self.F, self.g, self.z, self.rng.standard_normal((C, d)), gram=self.gram)
            else:
                u = self.rng.standard_normal((C, d))
                lo, hi = _chord(self.F, self.g, self.z, u, self.prior.low, self.prior.high)
                prop, ok = self.z + self.rng.uniform(lo, hi)[:, None] * u, np.ones(C, bool)
            prop = prop.astype(np.float32).astype(np.float64)  # the latents the model sees are float32
            ok[ok] = self._contains(prop[ok])
            self.z[ok] = prop[ok]
            self.moves += int(ok.sum())
        elif self.prior.kind == "normal":
            self._elliptical_slice()
        else:
            self._box_slice()
        return self.z.astype(np.float32)

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
    warmup: int  # draws per chain discarded before the kept ones
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
    membership-only slice kernels move by a boundary distance per step and need many more."""
    return 20 if method == "polytope" else 100


def sample_region(region, n=500, *, seed=0, prior=None, box=(-1.0, 1.0), chains=None, warmup=None,
                  method="auto", progress=True):
    """n latents of the prior restricted to `region` (see the module docstring), every one evaluated inside.

    prior: "normal" (N(0, I)) or "uniform" on `box` = (low, high) per coordinate; None (default): uniform on the
    region's `bounds` where it has them (a classifier's pixel box), else N(0, I). chains: Markov chains
    advanced together (default n/8, at most 64: enough draws per chain to measure mixing); warmup: draws per chain discarded first (default 20 for the exact
    polytope kernel, 100 for the slice kernels); method: "auto", "polytope" (affine prefixes only) or "slice".
    Same seed -> same samples. A RuntimeWarning says when the measured mixing is poor (split R-hat > 1.1 or
    fewer than n/10 effective samples): raise warmup, or use more chains.
    """
    check_region(region)
    n = positive_int(n, "n")
    seed = check_seed(seed)
    chains = max(1, min(64, n // 8)) if chains is None else positive_int(chains, "chains")  # >= 8 draws each
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    t0 = time.perf_counter()
    sampler = RegionSampler(region, chains=chains, prior=prior, box=box, seed=seed, method=method)
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
