"""The piecewise kernel's trajectory in plain numpy: the oracle `core.PiecewiseHMC` is tested against (the same
algorithm, vectorised over blocks of pieces instead of walking them one by one; ~10x slower)."""
import math

import numpy as np

from egbas_fast.sampling import HMC_TIME, MAX_BOUNCES


def exit_times(a, b, c):
    """Times in [0, 2 pi) at which a cos t + b sin t + c crosses 0 downward (inside -> outside), inf where never.

    With a cos t + b sin t = R cos(t - phi), the zeros are phi +- arccos(-c / R); the derivative -R sin(t - phi)
    is negative at phi + arccos(-c / R) only: the other zero is an entry, never the exit of a particle inside."""
    R = np.hypot(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = -c / R
        t = np.mod(np.arctan2(b, a) + np.arccos(np.clip(ratio, -1.0, 1.0)), 2 * math.pi)
    return np.where(np.abs(ratio) < 1.0, t, np.inf)


class Piece:
    """One chain's current affine piece: the selected values are h(z) = J z + e there, J = L diag(w) A and
    e = L (w * c) + e0 for the hidden slopes w. Moving to another piece changes J by one rank-1 term per hidden
    unit that switched, so a chain carries its piece instead of recomputing the k x d Jacobian."""

    def __init__(self, pw, w):
        self.pw, self.w = pw, np.full(len(pw.c), pw.slope)
        self.LT = np.ascontiguousarray(pw.L.T)  # (m, k): a hidden unit's column of L is one row
        self.J = pw.slope * (pw.L @ pw.A)
        self.e = pw.slope * (pw.L @ pw.c) + pw.e
        self.move_to(w)

    def move_to(self, w):
        pw = self.pw
        j = np.flatnonzero(w != self.w)
        if j.size:
            cols = self.LT[j].T * (w[j] - self.w[j])  # (k, s)
            self.J += cols @ pw.A[j]
            self.e += cols @ pw.c[j]
            self.w = w.copy()


def trajectory(pw, piece, z, v, travel=HMC_TIME, max_bounces=MAX_BOUNCES, first_block=4, max_block=256):
    """Exact HMC for N(0, I) truncated to the piecewise-affine region `pw`, one chain: (d,) z, v -> (end, walls hit)
    (-1: `max_bounces` walls did not finish it).

    The free motion is z cos t + v sin t. Each hidden pre-activation p_j(t) = A_j z(t) + c_j is a sinusoid, so the
    times where a hidden unit switches piece are closed-form; between two switches every selected value
    h_i(t) = L_i act(p(t)) + e_i is again a sinusoid, whose coefficients change by one column of L per switch.
    The particle passes hidden switches untouched (the potential is the same on both sides: Mohasel Afshar &
    Domke, NeurIPS 2015) and reflects off the selected unit it leaves through, on that unit's gradient in the
    current piece; travel and energy are exact, so the trajectory is reversible and volume-preserving.
    `piece` (the chain's `Piece`) is moved along.
    """
    A, c, LT, slope = pw.A, pw.c, piece.LT, pw.slope
    left = travel
    pa, pb = A @ z, A @ v  # hidden pre-activations (minus c) of the position and the velocity
    for bounce in range(max_bounces):
        block = first_block
        w = np.where(pa + c > 0, 1.0, slope)  # the hidden units' slopes at the segment's start
        piece.move_to(w)
        # hidden switches in (0, left): both zeros of each sinusoid (every zero is a switch)
        R = np.hypot(pa, pb)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = -c / R
        j = np.flatnonzero(np.abs(ratio) < 1.0)
        phi, delta = np.arctan2(pb[j], pa[j]), np.arccos(ratio[j])
        ts = np.concatenate([np.mod(phi - delta, 2 * math.pi), np.mod(phi + delta, 2 * math.pi)])
        js = np.concatenate([j, j])
        keep = (ts > 0) & (ts < left)
        order = np.argsort(ts[keep], kind="stable")
        ts, js = ts[keep][order], js[keep][order]
        first = np.zeros(len(js), bool)
        first[np.unique(js, return_index=True)[1]] = True
        w_before = np.where(first, w[js], 1.0 + slope - w[js])
        dw = 1.0 + slope - 2.0 * w_before  # slope change of the switching unit
        # coefficients (cos, sin, const) of every selected value on the first piece, then one column per switch
        H = np.stack([piece.J @ z, piece.J @ v, piece.e])[:, None]  # (3, 1, k)
        step = np.stack([pa[js], pb[js], c[js]]) * dw  # (3, K)
        bounds = np.concatenate([[0.0], ts, [left]])  # piece i spans bounds[i] .. bounds[i + 1]
        hit, i0 = None, 0
        while i0 <= len(ts) and hit is None:
            i1 = min(i0 + block, len(ts) + 1)  # pieces i0 .. i1-1; switches i0 .. i1-2 inside the block
            block = min(2 * block, max_block)  # most segments end within a few pieces: start small
            coef = np.empty((3, i1 - i0, LT.shape[1]))  # (3, b, k): cos, sin, const of each piece's values
            coef[:, 0] = 0.0
            np.multiply(LT[js[i0:i1 - 1]][None], step[:, i0:i1 - 1, None], out=coef[:, 1:])
            np.cumsum(coef, 1, out=coef)
            coef += H
            a, b, cc = coef  # (b, k) each
            lo, hi = bounds[i0:i1, None], bounds[i0 + 1:i1 + 1, None]
            # cheap screen: a value that is positive at both ends of its piece and cannot dip below 0 in between
            # (|h''| <= |a| + |b|, so h >= min(ends) - (|a| + |b|) width^2 / 8) does not exit there
            ends = np.minimum(a * np.cos(lo) + b * np.sin(lo), a * np.cos(hi) + b * np.sin(hi)) + cc
            rows, cols = np.nonzero(ends <= (np.abs(a) + np.abs(b)) * (hi - lo) ** 2 / 8)
            if rows.size:
                t = exit_times(a[rows, cols], b[rows, cols], cc[rows, cols])
                t[(t < lo[rows, 0]) | (t > hi[rows, 0]) | (t <= 0)] = np.inf
                best = int(t.argmin())
                if np.isfinite(t[best]):
                    hit = t[best], cols[best], i0 + rows[best]
            if hit is None and i1 <= len(ts):
                H = coef[:, -1:] + LT[js[i1 - 1]] * step[:, i1 - 1, None, None]
            i0 = i1
        if hit is None:
            return z * math.cos(left) + v * math.sin(left), bounce
        tt, unit, p = hit
        flips = np.bincount(js[:p], minlength=len(w)) % 2 == 1  # hidden units switched before the hit
        piece.move_to(np.where(flips, 1.0 + slope - w, w))
        cos, sin = math.cos(tt), math.sin(tt)
        z, v = z * cos + v * sin, -z * sin + v * cos
        pa, pb = pa * cos + pb * sin, -pa * sin + pb * cos
        normal = piece.J[unit]  # the gradient of the selected value on the current piece
        kick = 2.0 * (v @ normal) / (normal @ normal)
        v, pb = v - kick * normal, pb - kick * (A @ normal)
        left -= tt
    return z, -1
