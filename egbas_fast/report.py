"""The exploration report: pictures, numbers, a self-contained HTML page, written atomically.

`build_report` (called by `Exploration.save`) re-checks membership, runs the ε baselines, generates outputs and
computes the boundary profile; everything else here is a pure function of arrays, so the page renders and is
testable offline. Every file is rendered in memory first, then written with temp file + os.replace.
"""
import base64
import html
import io
import json
import math
import warnings

import numpy as np

from ._checks import positive_int
from . import _files
from ._files import atomic_write, check_writable

OutputDirectoryError = _files.OutputDirectoryError  # what check_writable raises

# The files `write_report` produces, in the order the page shows the pictures.
PNG_FILES = ("query.png", "egbas.png", "region.png", "eps_l2.png", "eps_linf.png", "tree.png", "profile.png")
REPORT_FILES = ("report.html",) + PNG_FILES + ("latents.npz", "summary.json")


# --------------------------------------------------------------------------------------------- output directory
def write_report(out_dir, files):
    """Write {file name: bytes} into `out_dir` (created if needed), each file atomically. Returns the dir Path.

    All contents are rendered before this is called, so an error while rendering leaves the directory untouched.
    """
    path = check_writable(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write(path / name, data)
    return path


# ------------------------------------------------------------------------------------------------------ images
def to_images(outputs):
    """Generator outputs -> (n, H, W, 3) float32 in [0, 1].

    Accepts (n, C, H, W) with C in {1, 3}, or flat (n, D) with D = s*s or 3*s*s (MLP generators). Outputs inside
    [-1, 1] are taken as tanh images ((x + 1) / 2); anything else is min-max scaled over the whole batch so that
    images stay comparable with one another. Other shapes are drawn as one row of D grey pixels.
    """
    x = outputs.detach().cpu().numpy() if hasattr(outputs, "detach") else np.asarray(outputs)
    x = x.astype(np.float32, copy=False)
    n = x.shape[0]
    if x.ndim == 2:
        side1, side3 = int(round(np.sqrt(x.shape[1]))), int(round(np.sqrt(x.shape[1] / 3)))
        if side1 * side1 == x.shape[1]:
            x = x.reshape(n, 1, side1, side1)
        elif 3 * side3 * side3 == x.shape[1]:
            x = x.reshape(n, 3, side3, side3)
        else:
            x = x.reshape(n, 1, 1, -1)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        x = x.reshape(n, 1, 1, -1)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if lo >= -1.0 - 1e-3 and hi <= 1.0 + 1e-3:
        x = (x + 1.0) / 2.0
    elif hi > lo:
        x = (x - lo) / (hi - lo)
    x = np.clip(x, 0.0, 1.0).transpose(0, 2, 3, 1)  # (n, H, W, C)
    return np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x


def grid_png(images, outside=None, cols=8, cell=64, captions=None, flagged=None):
    """(n, H, W, 3) images in [0, 1] -> PNG bytes of a grid; samples with outside[i] get a red frame.

    Small images are enlarged (nearest neighbour) to about `cell` pixels so a digit is readable on the page.
    captions: one short text per image, written under it (red where flagged[i]).
    """
    from PIL import Image, ImageDraw

    n, h, w, _ = images.shape
    zoom = max(1, cell // max(h, w))
    pad = 3
    rows = max(1, -(-n // cols))
    band = 12 if captions is not None else 0  # caption line under each tile
    ch, cw = h * zoom + 2 * pad + band, w * zoom + 2 * pad
    canvas = np.full((rows * ch, cols * cw, 3), 255, np.uint8)
    pixels = (images * 255.0 + 0.5).astype(np.uint8)
    for i in range(n):  # at most a few dozen tiles: a loop over pictures, not over samples of the exploration
        r, c = divmod(i, cols)
        y, x = r * ch, c * cw
        if outside is not None and outside[i]:
            canvas[y:y + ch, x:x + cw] = (220, 30, 30)
        tile = np.kron(pixels[i], np.ones((zoom, zoom, 1), np.uint8)) if zoom > 1 else pixels[i]
        canvas[y + pad:y + pad + h * zoom, x + pad:x + pad + w * zoom] = tile
    picture = Image.fromarray(canvas)
    if captions is not None:
        draw = ImageDraw.Draw(picture)
        for i, text in enumerate(captions[:n]):
            r, c = divmod(i, cols)
            red = flagged is not None and flagged[i]
            draw.text((c * cw + pad, r * ch + ch - band - 1), text, fill=(200, 20, 20) if red else (20, 20, 20))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def pca_2d(points):
    """(m, d) -> (m, 2): projection on the two leading principal axes (rows centred on their mean)."""
    centred = points - points.mean(axis=0, keepdims=True)
    if len(points) < 2:
        return np.zeros((len(points), 2), np.float32)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    proj = centred @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    return proj.astype(np.float32)


def tree_png(latents, parents):
    """The tree in the plane of its two principal axes: edges child-parent, nodes coloured by depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    xy = pca_2d(latents)
    depth = tree_depth(parents)
    child = np.flatnonzero(parents >= 0)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.add_collection(LineCollection(np.stack([xy[child], xy[parents[child]]], axis=1), colors="0.6",
                                     linewidths=0.6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=depth, s=6, cmap="viridis", zorder=2)
    ax.scatter(xy[:1, 0], xy[:1, 1], marker="*", s=180, c="crimson", edgecolors="k", zorder=3, label="query")
    fig.colorbar(sc, ax=ax, label="depth in the tree")
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.set_title(f"E-GBAS tree: {len(latents)} nodes, all inside the region")
    ax.legend(loc="best")
    ax.autoscale()
    return _figure_png(fig)


def tree_depth(parents):
    """(m,) parent indices (-1 root, parents before children) -> (m,) depth of each node."""
    depth = np.zeros(len(parents), np.int64)
    for i in range(1, len(parents)):  # parents[i] < i: one pass; cheap next to everything else in the report
        depth[i] = depth[parents[i]] + 1 if parents[i] >= 0 else 0
    return depth


def boundary_profile(region, order, shares, directions, max_distance, n_steps=48, rays_per_forward=8):
    """Distance from the query to the boundary along fixed rays, for growing shares of the layer's units.

    region: any region of the layer (its model, layer, query and threshold are used); order: all unit indices,
    most important first; shares: (S,) fractions of the layer; directions: (K, d) unit vectors. Returns (S, K).

    One pass for every share: each ray is sampled at `n_steps` geometric distances up to `max_distance`, the
    whole layer is evaluated there, and each unit's first sign flip is found; the exit of the region of the top-k
    units is then the running minimum of those first flips over `order`. A distance is the geometric midpoint of
    the last grid point inside and the first outside (about 10% resolution), `max_distance` if the ray stays in.
    """
    import torch

    from .layers import layer_output

    t = np.geomspace(max_distance * 1e-4, max_distance, n_steps)  # (T,)
    ref_on = np.asarray(region.query_values) > region.threshold  # (units,)
    ks = np.array([max(1, int(round(s * len(order)))) for s in shares]) - 1  # (S,) column of the running min
    mid = np.concatenate([[t[0] / 2], np.sqrt(t[1:] * t[:-1]), [max_distance]])  # exit in grid cell j
    out = np.empty((len(shares), len(directions)))
    for start in range(0, len(directions), rays_per_forward):
        u = directions[start:start + rays_per_forward]  # (k, d)
        z = (region.query[None, None, :] + t[None, :, None] * u[:, None, :]).astype(np.float32)  # (k, T, d)
        values = layer_output(region.model, region.layer,
                              region._to_model(torch.from_numpy(z.reshape(-1, region.dim))))  # (k*T, units)
        flips = ((values.float().cpu().numpy() > region.threshold) != ref_on).reshape(len(u), n_steps, -1)
        first = np.where(flips.any(1), flips.argmax(1), n_steps)  # (k, units): first grid point outside
        exit_ = np.minimum.accumulate(first[:, order], axis=1)[:, ks]  # (k, S)
        out[:, start:start + len(u)] = mid[exit_].T
    return out


def profile_png(shares, distances, selected_share, max_distance):
    """distances (S, K) from `boundary_profile` -> line plot of the median with the 10-90% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = np.asarray(shares) * 100.0
    q10, q50, q90 = np.percentile(distances, [10, 50, 90], axis=1)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.fill_between(shares, q10, q90, alpha=0.25, label="10-90% of rays")
    ax.plot(shares, q50, "o-", label="median")
    ax.axvline(selected_share * 100.0, color="crimson", ls="--", label=f"selected: {selected_share:.1%}")
    ax.axhline(max_distance, color="0.5", ls=":", lw=1, label="ray cap")
    ax.set_xscale("log")
    ax.set_yscale("log")  # from the whole layer (tiny) to a few boundaries (up to the cap)
    ax.set_xlabel("share of the layer's boundaries kept (%), most essential first")
    ax.set_ylabel("distance from the query to the boundary")
    ax.set_title("Fewer boundaries, larger region")
    ax.legend(fontsize=8)
    return _figure_png(fig)


# -------------------------------------------------------------------------------------------------------- page
def _fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.15em;margin:.2em 0 .4em}
.sub{color:#555;margin-top:0}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin-top:18px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 12px;background:#fafafa}
.card img{display:block;max-width:100%}
.wide{flex:1 1 0;min-width:300px} .wide img{width:100%;height:auto}
.grids{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:18px;margin-top:18px}
.grids .wide{min-width:0}
table{border-collapse:collapse;font-size:.92em} td,th{border-bottom:1px solid #e3e3e3;padding:4px 10px;
text-align:right} th:first-child,td:first-child{text-align:left}
.note{color:#666;font-size:.85em;max-width:520px}
.ok{color:#17803d;font-weight:600} .bad{color:#c0262d;font-weight:600}
"""


def render_html(summary, pngs, query_html=""):
    """summary (dict, see build_report) + {png name: bytes} -> one self-contained HTML page (str).
    query_html: the query's card (queries.QuerySource.html), shown under the title."""
    def picture(title, name, wide=True):  # a card with the PNG inlined; wide cards share their row's width
        data = base64.b64encode(pngs[name]).decode("ascii")
        return (f'<div class="card{" wide" if wide else ""}"><h2>{title}</h2>'
                f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></div>')

    m, e, r = summary["methods"], summary["exploration"], summary["region"]
    rows = []
    for key, label in (("egbas", "E-GBAS (tree)"), ("region", "region samples"), ("eps_l2", "&epsilon;-ball L2"),
                       ("eps_linf", "&epsilon;-ball L&infin;")):
        rate = m[key]["in_region_rate"]
        keeps = f"<td>{m[key]['keeps_query_class']:.1%}</td>" if "keeps_query_class" in m[key] else ""
        rows.append(f"<tr><td>{label}</td><td>{m[key]['n']}</td><td>{_fmt(m[key].get('eps', '–'))}</td>"
                    f"<td>{_fmt(m[key]['mean_distance'])}</td><td class='{'ok' if rate == 1.0 else 'bad'}'>"
                    f"{rate:.1%}</td><td>{_fmt(m[key]['diversity'])}</td>{keeps}</tr>")
    stats = [("nodes", e["nodes"]), ("proposals", e["proposals"]), ("acceptance", f"{e['acceptance']:.1%}"),
             ("of which bisection nodes", e["salvaged"]), ("seconds", e["seconds"]),
             ("nodes / second", e["nodes_per_second"]),
             ("targets", "restricted prior" if e["mode"] == "prior" else "box around the query"),
             ("step" if e["mode"] == "local" else "check spacing", e["step"])]
    if e["radius"] is not None:
        stats.append(("radius (box half-width)", e["radius"]))
    stats.append(("seed", e["seed"]))
    cov, rs, hom = summary["coverage"], summary["region_samples"], summary["homogeneity"]
    mixing = (f"{rs['chains']} chains of the {rs['method']} kernel, split R-hat {_fmt(rs['rhat'])}, "
              f"{_fmt(rs['ess'])} effective samples, {_fmt(rs['evaluations_per_effective_sample'])} forwards each")
    if not rs["well_mixed"]:
        mixing += " <span class='bad'>(poorly mixed: the samples may not yet cover the region)</span>"
    stat_rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in stats)
    layer = html.escape(str(r["layer"]))
    title = f"E-GBAS exploration — {html.escape(str(summary.get('model') or 'model'))}, layer {layer}"
    share = f"{r['units_selected']} of {r['n_units']} units ({r['units_selected'] / r['n_units']:.1%})"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<p class="sub">Generative region of the query: latents whose {share} essential boundaries at layer
<code>{layer}</code> have the query's signs. Latent dimension {r['dim']}.</p>
{query_html}
<div class="row">
 {picture("Query", "query.png", wide=False)}
 <div class="card"><h2>Exploration</h2><table>{stat_rows}</table></div>
 <div class="card"><h2>Methods</h2>
 <table><tr><th>method</th><th>samples</th><th>&epsilon;</th><th>mean dist.</th><th>in region</th>
 <th>diversity</th>{"<th>keeps class " + str(summary["classifier"]["query_class"]) + "</th>"
 if "classifier" in summary else ""}</tr>{''.join(rows)}</table>
 <p class="note">In-region rates are measured by re-evaluating every sample's membership (E-GBAS included).
 The &epsilon; radii are set so that the samples' mean distance from the query matches E-GBAS.
 Diversity: mean pairwise L2 distance between generated outputs. Red frames: samples outside the region.</p></div>
 <div class="card"><h2>Coverage</h2><table>
 <tr><td>reach</td><td>{_fmt(cov['reach'])}</td></tr><tr><td>diversity</td><td>{_fmt(cov['diversity'])}</td></tr>
 <tr><td>spread (3 main axes)</td><td>{' / '.join(_fmt(s) for s in cov['spread'])}</td></tr></table>
 <p class="note">The tree against samples of the generator's prior restricted to the region ({mixing}):
 reach = how far its nodes go from the query, diversity = how much its images vary, spread = how wide it is along
 the region's main axes, each as a share of the samples' (1 = the tree covers the whole region).</p>
 <p class="note">Homogeneity: the output moves {_fmt(hom['eps_l2_inside'])} per unit of latent distance for
 &epsilon;-L2 samples inside the region and {_fmt(hom['eps_l2_outside'])} for those that leak out
 (tree {_fmt(hom['egbas'])}, region samples {_fmt(hom['region'])}).</p></div>
</div>
<div class="grids">
 {picture("E-GBAS samples (tree nodes)", "egbas.png")}
 {picture("Region samples (the prior restricted to the region)", "region.png")}
 {picture(f"&epsilon;-ball L2 (&epsilon; = {_fmt(m['eps_l2']['eps'])})", "eps_l2.png")}
 {picture(f"&epsilon;-ball L&infin; (&epsilon; = {_fmt(m['eps_linf']['eps'])})", "eps_linf.png")}
</div>
<div class="row">
 {picture("Tree (2-D PCA of the latents)", "tree.png")}
 {picture("Boundary-distance profile", "profile.png")}
</div>
{('<div class="row">' + picture("Latent plane (N(0, 1) quantiles; red frames: outside the region)",
 "manifold.png") + '</div>') if "manifold.png" in pngs else ""}
</body></html>
"""


def summary_json(summary):
    return (json.dumps(summary, indent=2, sort_keys=False) + "\n").encode("utf-8")


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ exploration -> files
PROFILE_SHARES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
GRID = 64  # samples shown per method
PROFILE_RAYS = 32


def _unit_order(region, selection):
    """All unit indices of the layer, most essential first: the region's own units (so the selected share of the
    profile is exactly this region), then the others by the selection's theta (theta saturates at 1.0 in float32,
    so a theta ranking alone could put other units first)."""
    units = np.asarray(region.units, np.int64)
    rest = np.setdiff1d(np.arange(region.n_units), units)
    if selection is not None:
        rest = rest[np.argsort(-np.asarray(selection.theta, np.float64)[rest], kind="stable")]
    return np.concatenate([units, rest])


def build_report(exp, out_dir, selection=None, name=None, n_baseline=None, source=None):
    """Compute every picture and number of the report for Exploration `exp`, then write the files atomically.
    source: a `queries.QuerySource`; its settings card (and real.png for a real image) join the page."""
    from .baselines import matched_eps, sample_ball
    from .metrics import OUTPUT_SAMPLES, REGION_SAMPLES, coverage, output_change_per_distance, output_diversity
    from .region import random_directions, ray_cap
    from .sampling import sample_region

    out = check_writable(out_dir)
    if n_baseline is not None:
        positive_int(n_baseline, "n_baseline")
    region = exp.region
    z = exp.latents  # (m, d)
    m, d = z.shape
    query = z[0]
    rng = np.random.default_rng(exp.seed)  # only picks which samples are shown; not part of the exploration

    # --- E-GBAS: membership re-checked, not assumed
    egbas_inside = np.asarray(region.contains(z), bool)
    mean_dist = float(np.linalg.norm(z - query, axis=1).mean()) or float(exp.step)  # a lone root: use the step

    # --- the prior restricted to the region (what the tree should cover), then ε baselines at the tree's spread
    nb = n_baseline if n_baseline is not None else min(max(m, GRID), 2000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        rs = sample_region(region, n=min(nb, REGION_SAMPLES), seed=exp.seed + 1, prior=exp.prior, box=exp.box,
                           progress=False)
    l2 = sample_ball(region, nb, eps=matched_eps(mean_dist, d, "l2"), norm="l2", seed=exp.seed)
    linf = sample_ball(region, nb, eps=matched_eps(mean_dist, d, "linf"), norm="linf", seed=exp.seed)
    sets = {"egbas": (z, egbas_inside, None), "region": (rs.latents, np.asarray(region.contains(rs.latents), bool),
                                                         None),
            "eps_l2": (l2.latents, l2.inside, l2.eps), "eps_linf": (linf.latents, linf.inside, linf.eps)}

    # --- pictures and diversity: outputs of OUTPUT_SAMPLES random samples per method, the first GRID shown
    from .classifiers import ClassifierView

    query_output = region.generate(z[:1])
    view = ClassifierView.of(region, query_output)  # a classifier: show the images with class and confidence
    pngs = {"query.png": view.png(z[:1], query_output, cols=1, cell=160) if view is not None
            else grid_png(to_images(query_output), cols=1, cell=160)}
    methods = {}
    for key, (latents, inside, eps) in sets.items():
        picked = rng.permutation(len(latents))[:OUTPUT_SAMPLES]
        outputs = region.generate(latents[picked])
        if view is None:
            pngs[f"{key}.png"] = grid_png(to_images(outputs[:GRID]), outside=~inside[picked[:GRID]])
        else:
            pngs[f"{key}.png"] = view.png(latents[picked[:GRID]], outputs[:GRID], outside=~inside[picked[:GRID]])
        methods[key] = {"n": int(len(latents)), "in_region_rate": float(inside.mean()),
                        "mean_distance": float(np.linalg.norm(latents - query, axis=1).mean()),
                        "diversity": output_diversity(outputs)}
        if eps is not None:
            methods[key]["eps"] = float(eps)
        if view is not None:
            methods[key]["keeps_query_class"] = view.keeps_class(latents)
    if view is not None:
        summary_classifier = {"query_class": view.query_class,
                              "query_confidence": float(view.predictions(query_output)[1][0])}
    cov = coverage(region, z, rs.latents, seed=exp.seed)
    # the paper's homogeneity claim, measured: output change per unit of latent distance inside vs leaking out
    per = {"egbas": output_change_per_distance(region, z, query_output[0], exp.seed),
           "region": output_change_per_distance(region, rs.latents, query_output[0], exp.seed)}
    for key, s in (("eps_l2", l2), ("eps_linf", linf)):
        per[f"{key}_inside"] = output_change_per_distance(region, s.latents[s.inside], query_output[0], exp.seed)
        per[f"{key}_outside"] = output_change_per_distance(region, s.latents[~s.inside], query_output[0], exp.seed)
    pngs["tree.png"] = tree_png(z, exp.parents)
    if d == 2 and view is None and query_output.dim() == 4:  # a 2-D latent: the decoded plane, region marked
        from .manifold import manifold_png

        pngs["manifold.png"] = manifold_png(region)

    # --- profile: ray distance to the boundary as more of the layer's boundaries are kept
    n_units = int(region.n_units)
    selected_share = len(region.units) / n_units
    grid = [s for s in PROFILE_SHARES if s * n_units >= 1 and abs(math.log(s / selected_share)) > 0.2]
    shares = np.array(sorted(grid + [selected_share]))
    cap = ray_cap(region)
    prof = boundary_profile(region, _unit_order(region, selection), shares,
                            random_directions(PROFILE_RAYS, d, exp.seed + 1), cap)
    pngs["profile.png"] = profile_png(shares, prof, selected_share, cap)

    summary = {
        "model": name,
        "region": {"layer": getattr(region, "layer", None), "dim": int(d), "n_units": n_units,
                   "units_selected": int(len(region.units))},
        "exploration": {"nodes": int(m), "proposals": int(exp.proposals), "accepted": int(exp.accepted),
                        "salvaged": int(exp.salvaged), "acceptance": float(exp.acceptance),
                        "seconds": float(exp.seconds), "membership_seconds": float(exp.membership_seconds),
                        "nodes_per_second": float(exp.nodes_per_second), "step": float(exp.step),
                        "radius": None if exp.radius is None else float(exp.radius), "batch": int(exp.batch),
                        "seed": int(exp.seed), "mode": exp.mode, "prior": exp.prior,
                        "sampler": exp.sampler_method},
        "methods": methods,
        "region_samples": {**rs.diagnostics(), "warning": str(caught[-1].message) if caught else None},
        "coverage": cov.as_dict(),
        "homogeneity": {k: (None if not math.isfinite(v) else v) for k, v in per.items()},
        "profile": {"shares": [float(s) for s in shares], "median_distance": np.median(prof, axis=1).tolist(),
                    "ray_cap": float(cap)},
    }
    if view is not None:
        summary["classifier"] = summary_classifier
    if selection is not None:
        summary["selection"] = {"fidelity": float(getattr(selection, "fidelity", float("nan")))}
    if source is not None:  # where the query came from and the run's settings
        summary["query"] = source.summary()
        pngs.update(source.pngs())
    files = {name_: pngs[name_] for name_ in PNG_FILES}
    files.update({name_: pngs[name_] for name_ in ("real.png", "manifold.png") if name_ in pngs})
    files["latents.npz"] = npz_bytes(latents=z, parents=exp.parents, units=np.asarray(region.units, np.int64),
                                     region_latents=rs.latents, eps_l2_latents=l2.latents, eps_l2_inside=l2.inside,
                                     eps_linf_latents=linf.latents, eps_linf_inside=linf.inside)
    files["summary.json"] = summary_json(summary)
    files["report.html"] = render_html(summary, pngs, source.html(pngs) if source is not None else "").encode("utf-8")
    return write_report(out, files)
