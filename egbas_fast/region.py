"""The generative region of a query latent: latents whose selected units at a layer are on/off as at the query.

Unit i of the layer is *on* iff its value is > threshold. Membership packs the on/off bits of a batch with the
C++ core (`core.pack_signs`) and counts the selected bits that differ from the query's (`core.mismatch_count`);
a latent is inside iff that count is 0. The forward runs only the network's prefix up to the layer.
"""
import copy

import numpy as np
import torch

from . import core
from ._checks import finite_real, positive_int, positive_real
from .interface import check_model
from .layers import LayerNotReached, LayerOutputError, evaluating, get_layer, model_device, model_dtype, prefix_output


def _as_real_array(x, name):
    """numpy view of an array-like / tensor with a real dtype (no copy for a CPU float32 array)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got a {x.dtype} tensor")
        return x
    x = np.asarray(x)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def _all_finite(x):
    return bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else bool(np.isfinite(x).all())


def input_bounds(model):
    """(lo, hi) of a model whose input is an image rather than a latent: `egbas_config["input_bounds"]` if set,
    (-1, 1) for our classifiers (trained on pixels in [-1, 1]), else None (a latent: the prior decides)."""
    config = getattr(model, "egbas_config", None) or {}
    if config.get("input_bounds") is not None:
        lo, hi = (float(v) for v in config["input_bounds"])
        return lo, hi
    return (-1.0, 1.0) if config.get("model") == "classifier" else None


class GenerativeRegion:
    """Latents z whose selected units at `layer` have the same on/off state (value > threshold) as at `query`.

    model: any torch.nn.Module; layer: dotted name from `model.named_modules()`; query: ONE input without the
    batch dim, (d,) or e.g. (100, 1, 1). units: flat unit indices of the layer (default all). Latents are given
    flat (n, d) or as (n, *query.shape). The model is used in eval mode under no_grad; its flags are restored.

    A query unit exactly at the threshold is *off* (on means strictly greater), and so is every latent whose unit
    sits exactly there: for a ReLU layer, an off unit is exactly 0 and stays off until its pre-activation turns
    positive. The query is always inside: rows equal to the query are pinned inside, because a batched forward can
    round a unit near the threshold differently from the query's own single forward (convolution algorithms
    depend on the batch size).
    """

    # (lo, hi): the valid box of the input, where the input is an image (a classifier's pixels, a restorer's);
    # explorers and samplers keep every latent inside it. Read from the model (see `input_bounds`); settable.
    bounds = None

    def __init__(self, model, layer, query, units=None, threshold=0.0, batch_size=512):
        self._module = get_layer(model, layer)  # validates model and layer
        self.model, self.layer = model, layer
        # The core compares float32 values, so the threshold is the float32 the core sees.
        self.threshold = float(np.float32(finite_real(threshold, "threshold")))
        self.batch_size = positive_int(batch_size, "batch_size")
        q = _as_real_array(query, "query")
        if q.ndim == 0 or 0 in q.shape:
            raise ValueError(f"query must be one latent without the batch dim, e.g. (d,) or (d, 1, 1); got shape "
                             f"{tuple(q.shape)}")
        if not _all_finite(q):
            raise ValueError("query contains NaN or inf")
        q = q.cpu().numpy() if isinstance(q, torch.Tensor) else q
        self.query_shape = tuple(q.shape)
        self.dim = int(q.size)
        self.query = np.array(q, dtype=np.float32).reshape(self.dim)  # (d,)
        self.query.setflags(write=False)
        self.device = model_device(model)
        self._dtype = model_dtype(model)
        self._query_t = torch.tensor(self.query).to(self.device, self._dtype)  # (d,) for pinning
        try:
            values = prefix_output(model, self._module, layer, self._to_model(self._query_t[None]))  # (1, units)
        except (LayerNotReached, LayerOutputError):
            raise
        except (RuntimeError, ValueError, TypeError) as e:  # the model itself rejects the input
            raise ValueError(f"query of shape {self.query_shape} does not fit the model's input: {e} (a model that "
                             f"takes more inputs, a label or keyword arguments, can be wrapped: "
                             f"eg.interface.adapt(model, args=(label,)) or adapt(model, forward=callable))") from e
        check_model(model, self._to_model(self._query_t[None]))  # one tensor out, deterministic: before any work
        self._query_layer = values[0].cpu()  # (units,) in the model's dtype: the reference bits come from it
        self.query_values = self._query_layer.to(torch.float32).numpy()  # (units,) the layer at the query
        self.query_values.setflags(write=False)
        self.n_units = int(self.query_values.size)
        self._set_units(units)
        self.bounds = input_bounds(model)

    # ---- units -------------------------------------------------------------------------------------------
    def _set_units(self, units):
        if units is None:
            idx = np.arange(self.n_units, dtype=np.int64)
        else:
            idx = units.detach().cpu().numpy() if isinstance(units, torch.Tensor) else np.asarray(units)
            if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
                if idx.size == 0 and idx.ndim == 1:
                    raise ValueError("units is empty: select at least one unit")
                raise TypeError(f"units must be integer unit indices, got dtype {idx.dtype}")
            if idx.ndim != 1:
                raise ValueError(f"units must be a 1-D array of unit indices, got shape {idx.shape}")
            if idx.size == 0:
                raise ValueError("units is empty: select at least one unit")
            bad = idx[(idx < 0) | (idx >= self.n_units)]
            if bad.size:
                raise ValueError(f"units out of range [0, {self.n_units}) of layer {self.layer!r}: {bad[:5].tolist()}")
            uniq, counts = np.unique(idx, return_counts=True)
            if uniq.size != idx.size:
                raise ValueError(f"units has duplicates: {uniq[counts > 1][:5].tolist()}")
            idx = idx.astype(np.int64)
        self.units = idx
        self.units.setflags(write=False)
        self._all_units = idx.size == self.n_units  # membership order does not matter: no gather needed
        units_t = torch.tensor(idx)  # a copy: idx may be a read-only array, which torch.from_numpy warns about
        self._units_t = None if self._all_units else units_t.to(self.device)
        ref_values = self._query_layer if self._all_units else self._query_layer[units_t]
        self._ref = self._pack(ref_values[None])[0]  # (w,) uint64: packed exactly like every batch
        # Mask of the k used bits: padding bits of the last word are 0, exactly as pack_signs writes them.
        self._mask = core.pack_signs(np.ones((1, idx.size), np.float32), 0.0)[0]

    def restrict(self, units):
        """The same region with only `units` (flat indices into the layer, not into `self.units`)."""
        region = copy.copy(self)  # shares the model and the read-only query arrays
        region._set_units(units)
        return region

    # ---- membership --------------------------------------------------------------------------------------
    def _to_model(self, flat):
        """(n, d) tensor -> the model's input (n, *query.shape) on its device and dtype."""
        return flat.to(self.device, self._dtype).view(flat.shape[0], *self.query_shape)

    def _as_batch(self, Z, name="Z"):
        """Z (n, d) or (n, *query.shape), numpy or torch -> (n, d) tensor; CPU float32 numpy is not copied."""
        Z = _as_real_array(Z, name)
        shape = tuple(Z.shape)
        if not (len(shape) == 2 and shape[1] == self.dim) and shape[1:] != self.query_shape:
            raise ValueError(f"{name} must be (n, {self.dim}) or (n, {', '.join(map(str, self.query_shape))}); got "
                             f"shape {shape}")
        if not _all_finite(Z):
            raise ValueError(f"{name} contains NaN or inf")
        if not isinstance(Z, torch.Tensor):
            Z = np.ascontiguousarray(Z)
            Z = torch.from_numpy(Z if Z.flags.writeable else Z.copy())  # torch warns on read-only arrays
        return Z.reshape(shape[0], self.dim)

    def _pack(self, values):
        """(b, k) layer values (torch) -> (b, w) uint64 on/off bits."""
        nan_error = f"layer {self.layer!r} produced NaN for some latents: their on/off state is undefined"
        if values.dtype == torch.float64:  # float32 rounding could move a tiny value onto the threshold
            if torch.isnan(values).any():
                raise ValueError(nan_error)
            values = (values > self.threshold).to(torch.float32)
            return core.pack_signs(np.ascontiguousarray(values.cpu().numpy()), 0.5)
        values = values.to(torch.float32).cpu().numpy()
        try:
            return core.pack_signs(np.ascontiguousarray(values), self.threshold)
        except ValueError as e:  # the core rejects NaN (an extra isnan pass here would cost time)
            raise ValueError(f"{nan_error} ({e})") from e

    def mismatches(self, Z):
        """Number of selected boundaries between each z and the query: (n,) int32 (0 = inside)."""
        Z = self._as_batch(Z)  # (n, d)
        out = np.empty(Z.shape[0], np.int32)
        with evaluating(self.model):  # once per call, not per chunk
            for start in range(0, Z.shape[0], self.batch_size):
                chunk = Z[start:start + self.batch_size].to(self.device, self._dtype)  # (b, d)
                values = prefix_output(self.model, self._module, self.layer, self._to_model(chunk), eval_mode=False)
                if not self._all_units:
                    values = values.index_select(1, self._units_t)  # (b, k)
                counts = core.mismatch_count(self._pack(values), self._ref, self._mask)
                counts[(chunk == self._query_t).all(1).cpu().numpy()] = 0  # the query is inside by definition
                out[start:start + chunk.shape[0]] = counts
        return out

    def contains(self, Z):
        """Membership of each latent: (n,) bool."""
        return self.mismatches(Z) == 0

    # ---- geometry ----------------------------------------------------------------------------------------
    def boundary_distance(self, directions, max_distance=None, tol=1e-4):
        """Distance from the query to the region's boundary along each direction: (k,) float64.

        Each ray z(t) = query + t * u (u = the normalised direction) is marched outward geometrically,
        t = tol, 2 tol, 4 tol, ..., until a point is outside; the bracket [last inside t, first outside t] is then
        bisected to width <= tol and its midpoint returned, all rays batched in one forward per step. For a region
        bounded by the first layer's units (Linear/Conv into ReLU) the region is a convex polytope and this is the
        unique exit (error <= tol/2). Deeper regions need not be convex: a ray can leave and re-enter between two
        marching points, and then the crossing found lies in the first bracket that ends outside, which may not
        be the first exit. A ray still inside at `max_distance` returns `max_distance`; with max_distance=None
        the march stops at 1e4 * max(1, |query|) and such rays return inf (the region is unbounded there).
        """
        tol = positive_real(tol, "tol")
        if max_distance is not None:
            max_distance = positive_real(max_distance, "max_distance")
        U = self._as_batch(directions, "directions").to(torch.float64).cpu().numpy()  # (k, d)
        norms = np.linalg.norm(U, axis=1)
        if (norms == 0).any():
            raise ValueError(f"directions has zero rows: {np.flatnonzero(norms == 0)[:5].tolist()}")
        U = U / norms[:, None]
        q = self.query.astype(np.float64)
        cap = max_distance if max_distance is not None else 1e4 * max(1.0, float(np.linalg.norm(q)))

        def inside(rows, t):  # rays `rows` at distances t (len(rows),)
            return self.contains((q + t[:, None] * U[rows]).astype(np.float32))

        k = U.shape[0]
        lo = np.zeros(k)  # last distance known inside (the query is inside)
        hi = np.full(k, np.inf)  # first distance known outside
        active = np.arange(k)
        t = min(tol, cap)
        while active.size:  # geometric march: find a bracket for every ray
            ins = inside(active, np.full(active.size, t))
            lo[active[ins]] = t
            hi[active[~ins]] = t
            active = active[ins]
            if t >= cap:
                break
            t = min(2 * t, cap)
        while True:  # bisection of every bracket, batched
            rows = np.flatnonzero(np.isfinite(hi) & (hi - lo > tol))
            if not rows.size:
                break
            mid = 0.5 * (lo[rows] + hi[rows])
            ins = inside(rows, mid)
            lo[rows[ins]] = mid[ins]
            hi[rows[~ins]] = mid[~ins]
        escaped = ~np.isfinite(hi)
        dist = 0.5 * (lo + np.where(escaped, lo, hi))
        dist[escaped] = np.inf if max_distance is None else max_distance
        return dist

    # ---- output ------------------------------------------------------------------------------------------
    def generate(self, Z):
        """Full model output for Z (n, d) or (n, *query.shape), batched: a CPU tensor (n, ...)."""
        Z = self._as_batch(Z)
        outs = []
        with torch.no_grad(), evaluating(self.model):
            for start in range(0, Z.shape[0], self.batch_size):
                out = self.model(self._to_model(Z[start:start + self.batch_size])).cpu()
                outs.append(out.float() if out.dtype in (torch.float16, torch.bfloat16) else out)  # numpy-readable
        if not outs:
            raise ValueError("Z is empty: nothing to generate")
        return torch.cat(outs)

    def __repr__(self):
        return (f"GenerativeRegion(layer={self.layer!r}, dim={self.dim}, units={self.units.size}/{self.n_units}, "
                f"threshold={self.threshold})")


# ------------------------------------------------------------------------------------------- ray geometry helpers
def check_region(region):
    """TypeError unless `region` has what the samplers use (a GenerativeRegion or a stand-in with its methods)."""
    for attr in ("dim", "query", "contains", "boundary_distance", "generate"):
        if not hasattr(region, attr):
            raise TypeError(f"region must be an egbas_fast.GenerativeRegion (missing .{attr}), "
                            f"got {type(region).__name__}")


def ray_cap(region):
    """Farthest distance a ray from the query is followed: 2 * max(|query|, 1).

    Regions of few boundaries are unbounded in many directions; beyond twice the query's own norm we are no longer
    exploring "around" the query (for N(0, I) latents in d = 100 that is about 1.4x the distance between two
    prior samples).
    """
    return 2.0 * max(float(np.linalg.norm(region.query)), 1.0)


def random_directions(k, d, seed):
    """(k, d) float32 unit vectors, uniform on the sphere, from the core's counter-based normal stream."""
    g = core.random_normal(k, d, seed)
    return (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
