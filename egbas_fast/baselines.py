"""The ε-ball baseline of E-GBAS: latents uniform in an L2 ball or an L∞ cube around the query, with their true
membership (the samples are NOT filtered: leaking out of the region is what the baseline shows)."""
from dataclasses import dataclass

import math

import numpy as np

from . import core
from ._checks import positive_int, positive_real
from ._checks import seed as check_seed
from .region import check_region


@dataclass
class BallSamples:
    """ε-ball baseline samples and their true membership."""

    latents: np.ndarray  # (n, d) float32
    inside: np.ndarray  # (n,) bool: region.contains of each sample
    eps: float
    norm: str

    @property
    def in_region_rate(self):
        return float(self.inside.mean()) if len(self.inside) else 0.0


def sample_ball(region, n=500, *, eps, norm="l2", seed=0):
    """The ε baseline: n latents uniform in the L2 ball (norm="l2") or the L∞ cube (norm="linf") of radius `eps`
    around the query, with their membership evaluated (samples are NOT filtered: leaking out is the point)."""
    check_region(region)
    n = positive_int(n, "n")
    eps = positive_real(eps, "eps")
    seed = check_seed(seed)
    if norm == "l2":
        z = core.random_uniform_ball(region.query, eps, n, seed)
    elif norm == "linf":
        z = core.random_uniform_box(region.query, eps, n, seed)
    else:
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    bounds = getattr(region, "bounds", None)  # a classifier's pixel box: samples are valid images
    z = np.ascontiguousarray(z if bounds is None else np.clip(z, bounds[0], bounds[1]), np.float32)
    return BallSamples(latents=z, inside=np.asarray(region.contains(z), bool), eps=eps, norm=norm)


def matched_eps(mean_distance, d, norm):
    """The ε at which `sample_ball` samples lie at `mean_distance` from the query on average, so a baseline is
    compared with the tree at the same spread: E|u| = ε d/(d+1) in the L2 ball, ~ε sqrt(d/3) (1 - 1/(10d)) in
    the L∞ cube of half-width ε."""
    if norm == "l2":
        return mean_distance * (d + 1) / d
    if norm == "linf":
        return mean_distance / (math.sqrt(d / 3.0) * (1.0 - 1.0 / (10.0 * d)))
    raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
