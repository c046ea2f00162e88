"""Sweeps: one exploration per (layer, keep, query) of one model, run in parallel, one Parquet row each.

    tasks     layers x keeps x queries, minus the rows already in the table (a rerun resumes)
    engine    an embedded process pool (spawn; one torch thread per worker; the model loaded once per worker), or,
              with an address (or RAY_ADDRESS), plain Ray tasks on a cluster (weights shipped once with ray.put,
              lost workers retried). Both hand back concurrent.futures futures: ONE as_completed loop serves both.
    row       `run_row`: query -> select_boundaries(keep) -> explore(n) -> ε baselines at the tree's spread ->
              every setting and figure, or the error; computed in a worker, never raises.
    table     written by the driver only: DIR/part-*.parquet, one file per finished row, each written atomically
              with an explicit schema (SCHEMA). A killed sweep loses only the rows in flight; at the end the parts
              are merged into one file (crash-safe: a merged part names its sources, and leftovers are removed).

Read the table with pyarrow (`read_table(glob('DIR/part-*.parquet'))`: the folder also holds summary.html and
reports/) or duckdb: `SELECT ... FROM read_parquet('DIR/*.parquet')`.
"""
import concurrent.futures
import datetime
import json
import math
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
import uuid
import warnings
from pathlib import Path

import numpy as np

from ._checks import finite_real, positive_int
from ._checks import seed as check_seed
from ._files import atomic_write, check_writable

SWEEP_EXTRA = "pip install 'egbas-fast[sweep]'"
RAY_EXTRA = "pip install 'egbas-fast[ray]'"
MAX_RETRIES = 3  # Ray re-runs a task whose worker died this many times before the row is recorded as failed
DIVERSITY_SAMPLES = 256  # tree nodes whose generated outputs give the row's output diversity
MERGED_FROM = b"egbas.merged_from"  # Parquet metadata of a merged part: the part files it replaces (JSON list)

# The row key: a rerun skips every task whose key is already in the table.
KEY = ("model", "layer", "keep", "query", "seed", "n")
# What a task says about its row (the key and how the query is made), copied into the row as it is.
SETTINGS = KEY[:4] + ("query_seed", "image") + KEY[4:]
# Columns that differ between two runs of the same rows (wall times, where and when it ran).
TIMING_COLUMNS = ("nodes_per_second", "query_seconds", "select_seconds", "explore_seconds", "membership_seconds",
                  "seconds", "worker", "finished_at")


def _require(module, extra, what):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"{what} needs {module}: run `{extra}`") from None


def _pyarrow():
    _require("pyarrow", SWEEP_EXTRA, "a sweep's table")
    import pyarrow
    import pyarrow.parquet

    return pyarrow


def schema():
    """The table's explicit schema: every row has every column (null where a figure does not apply)."""
    pa = _pyarrow()
    i64, f64, txt = pa.int64(), pa.float64(), pa.string()
    return pa.schema([
        # what the row is (KEY), and where its query came from: a prior draw (query_seed) or a real image (image,
        # and the PSNR of the generator's reconstruction of it)
        ("model", txt), ("layer", txt), ("keep", f64), ("query", txt), ("query_seed", i64), ("image", txt),
        ("psnr", f64), ("seed", i64), ("n", i64),
        # the region: latent dimension, units of the layer, essential units kept, output error with only those
        # kept, median distance from the query to the region's boundary along random rays
        ("dim", i64), ("n_units", i64), ("units", i64), ("fidelity", f64), ("median_boundary_distance", f64),
        # the tree
        ("nodes", i64), ("proposals", i64), ("accepted", i64), ("salvaged", i64), ("acceptance", f64),
        ("step", f64), ("radius", f64), ("mean_distance", f64), ("nodes_per_second", f64),
        # ε baselines at the tree's mean distance: their ε and the share of samples inside the region
        ("eps_l2", f64), ("eps_l2_in_region", f64), ("eps_linf", f64), ("eps_linf_in_region", f64),
        # outputs: mean pairwise L2 of generated tree samples; coverage against samples of the restricted prior
        # (reach, diversity: tree / region samples), null unless computed
        ("output_diversity", f64), ("reach", f64), ("diversity", f64),
        # bookkeeping
        ("status", txt), ("error", txt), ("query_seconds", f64), ("select_seconds", f64), ("explore_seconds", f64),
        ("membership_seconds", f64), ("seconds", f64), ("worker", txt),
        ("finished_at", pa.timestamp("ms", tz="UTC")), ("version", txt),
    ])


# ------------------------------------------------------------------------------------------------- one row
def task_key(row):
    return tuple(row[k] for k in KEY)


def _error_text(e):
    """'ValueError: message (at file.py:123)': the exception and where it was raised."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"[:2000]


def run_row(model, task):
    """Compute one row of the table for `task` (a dict: model, layer, keep, query, query_seed, seed, n,
    latent_shape, reports, coverage). Never raises: a failure is a row with status "failed" and its error."""
    from . import __version__

    t0 = time.perf_counter()
    row = {k: task[k] for k in SETTINGS}
    try:
        row.update(_figures(model, task))
        row["status"], row["error"] = "ok", None
    except Exception as e:  # the row records it; the sweep goes on
        row["status"], row["error"] = "failed", _error_text(e)
    row.update(seconds=time.perf_counter() - t0, worker=f"{socket.gethostname()}:{os.getpid()}",
               finished_at=datetime.datetime.now(datetime.timezone.utc), version=__version__)
    return row


def _figures(model, task):
    from .baselines import matched_eps, sample_ball
    from .exploration import explore
    from .metrics import output_diversity
    from .selection import select_boundaries

    seed, n = task["seed"], task["n"]
    t = time.perf_counter()
    query, psnr = task_query(model, task)
    query_seconds = time.perf_counter() - t
    t = time.perf_counter()
    sel = select_boundaries(model, task["layer"], query, keep=task["keep"], seed=seed)
    select_seconds = time.perf_counter() - t
    region = sel.region()
    res = explore(region, n=n, seed=seed, progress=False)
    z = res.latents
    d = region.dim
    ray_distance = res.ray_distances  # the rays behind explore's default step: not marched again
    mean_distance = float(np.linalg.norm(z - z[0], axis=1).mean())
    spread = mean_distance or float(res.step)  # a lone root: the ε baselines still need a radius
    l2 = sample_ball(region, n, eps=matched_eps(spread, d, "l2"), norm="l2", seed=seed)
    linf = sample_ball(region, n, eps=matched_eps(spread, d, "linf"), norm="linf", seed=seed)
    picked = np.random.default_rng(seed).permutation(len(z))[:DIVERSITY_SAMPLES]
    figures = {
        "psnr": psnr, "dim": d, "n_units": int(region.n_units), "units": int(len(region.units)),
        "fidelity": float(sel.fidelity),
        "median_boundary_distance": float(np.median(ray_distance)),
        "nodes": int(len(z)), "proposals": int(res.proposals), "accepted": int(res.accepted),
        "salvaged": int(res.salvaged), "acceptance": float(res.acceptance), "step": float(res.step),
        "radius": None if res.radius is None else float(res.radius),  # None: targets from the prior, no box
        "mean_distance": mean_distance, "nodes_per_second": float(res.nodes_per_second),
        "eps_l2": float(l2.eps), "eps_l2_in_region": l2.in_region_rate,
        "eps_linf": float(linf.eps), "eps_linf_in_region": linf.in_region_rate,
        "output_diversity": output_diversity(region.generate(z[picked])),
        "query_seconds": query_seconds, "select_seconds": select_seconds, "explore_seconds": float(res.seconds),
        "membership_seconds": float(res.membership_seconds),
    }
    if task.get("coverage"):  # the tree against the prior restricted to the same region
        from .metrics import REGION_SAMPLES, coverage
        from .sampling import sample_region

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mixing is in the row: the sampler's R-hat below
            rs = sample_region(region, n=min(n, REGION_SAMPLES), seed=seed + 1, progress=False)
        cov = coverage(region, z, rs.latents, seed=seed)
        figures.update(reach=float(cov.reach), diversity=float(cov.diversity))
    if task.get("reports"):
        res.save(Path(task["reports"]) / report_name(task), selection=sel, name=task["model"])
    return figures


def task_query(model, task):
    """(query, psnr) of a task: prior draw `query_seed`, or a real image (task["pixels"], (C, H, W) in the model's
    range): inverted through a generator (psnr: of its reconstruction), the image itself for a classifier."""
    from .demo import query_latent

    if task["image"] is None:
        return query_latent(model, task["query_seed"], task["latent_shape"]), None
    if task.get("latent") is not None:  # encoded by the driver (vae / ae checkpoints)
        return task["latent"], task["psnr"]
    if _is_classifier(model):  # the region lives in image space
        return task["pixels"], None
    from .inversion import invert

    inversion = invert(model, task["pixels"], seed=task["seed"], latent_shape=task["latent_shape"], progress=False)
    return inversion.latent, float(inversion.psnr)


def _is_classifier(model):
    return (getattr(model, "egbas_config", None) or {}).get("model") == "classifier"


def report_name(task):
    """Directory name of a row's report: layer-keep-query-seed-n, safe as a file name."""
    query = f"image-{Path(task['image']).stem}" if task["image"] else task["query"]
    name = f"{task['layer']}-keep{task['keep']:g}-{query}-seed{task['seed']}-n{task['n']}"
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in name)


# --------------------------------------------------------------------------------------------- the model
class ModelSource:
    """What workers load: a checkpoint path, the zoo's "faces", or a torch module (pickled to the workers)."""

    def __init__(self, model):
        if isinstance(model, (str, os.PathLike)) and str(model) == "faces":
            self.kind, self.arg, self.name = "faces", None, "faces"
        elif isinstance(model, (str, os.PathLike)):
            path = Path(model).expanduser().absolute()
            if not path.exists():
                raise FileNotFoundError(f"no checkpoint at {str(path)!r} (train one with `egbas train`)")
            self.kind, self.arg, self.name = "checkpoint", str(path), f"checkpoint:{path}"
        else:
            import torch

            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"model must be a torch.nn.Module, a checkpoint path or 'faces', "
                                f"got {type(model).__name__}")
            config = getattr(model, "egbas_config", {}) or {}
            self.kind, self.arg = "module", model
            self.name = f"module:{config.get('model') or type(model).__name__}"

    def load(self):
        if self.kind == "faces":
            from . import zoo

            return zoo.face_dcgan()
        if self.kind == "checkpoint":
            from . import checkpoint

            return checkpoint.load(self.arg)
        return self.arg


# ------------------------------------------------------------------------------------------------ engines
_WORKER_MODEL = {}  # in a worker: {token: model}, the model of the sweep being served (loaded once)


def _one_thread_per_worker():
    """K single-threaded workers beat K workers fighting over every core: torch's and the C++ core's threads."""
    import torch

    from . import core

    torch.set_num_threads(1)
    core.set_num_threads(1)


def _init_pool_worker(source):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it cancels and lets rows in flight end
    _one_thread_per_worker()
    _WORKER_MODEL["pool"] = source.load()


def _pool_row(task):
    return run_row(_WORKER_MODEL["pool"], task)


def _ray_row(model_box, token, task):
    """A Ray task. model_box = [ObjectRef]: boxed so Ray does not fetch it for every task; a worker fetches the
    weights once per sweep (token) and keeps them."""
    import ray

    if token not in _WORKER_MODEL:
        _WORKER_MODEL.clear()
        _WORKER_MODEL[token] = ray.get(model_box[0])
    _one_thread_per_worker()
    return run_row(_WORKER_MODEL[token], task)


class _Pool:
    """The embedded engine: a spawn process pool (fork would copy the driver's torch threads and locks)."""

    def __init__(self, source, workers):
        context = multiprocessing.get_context("spawn")
        # a checkpoint or "faces" is loaded by each worker from disk; a module is pickled to each worker once
        self.executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                               initializer=_init_pool_worker, initargs=(source,))

    def submit(self, task):
        return self.executor.submit(_pool_row, task)

    def close(self, cancel):
        self.executor.shutdown(wait=True, cancel_futures=cancel)


class _Ray:
    """The cluster engine: plain Ray tasks; weights put in the object store once."""

    def __init__(self, source, model, address):
        self.ray = ray = _require("ray", RAY_EXTRA, "egbas sweep --address")
        self.owned = not ray.is_initialized()
        if self.owned:
            ray.init(address=address, log_to_driver=False)
        self.model_box = [ray.put(model)]
        self.token = uuid.uuid4().hex
        self.remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_ray_row)
        self.refs = []

    def submit(self, task):
        ref = self.remote.remote(self.model_box, self.token, task)
        self.refs.append(ref)
        return ref.future()

    def close(self, cancel):
        if cancel:
            for ref in self.refs:
                self.ray.cancel(ref)
        if self.owned:
            self.ray.shutdown()


# -------------------------------------------------------------------------------------------------- table
def _part_files(out):
    return sorted(Path(out).glob("part-*.parquet"))


def _read_parts(out):
    """{part path: pyarrow.Table}, after finishing an interrupted merge (parts a merged part replaces are dropped)."""
    pa = _pyarrow()
    tables = {}
    for path in _part_files(out):
        try:
            tables[path] = pa.parquet.read_table(path)
        except Exception as e:
            raise ValueError(f"{path} is not a readable Parquet part ({e}); move it away and rerun") from None
    for path, table in list(tables.items()):
        merged = (table.schema.metadata or {}).get(MERGED_FROM)
        for name in json.loads(merged) if merged else ():
            tables.pop(path.parent / name, None)
    return tables


def read_table(out):
    """The whole table of the sweep in `out` as one pyarrow.Table (SCHEMA; no row twice)."""
    pa = _pyarrow()
    tables = list(_read_parts(out).values())
    return pa.concat_tables([t.replace_schema_metadata(None).cast(schema()) for t in tables]) if tables \
        else schema().empty_table()


def _part_bytes(table):
    pa = _pyarrow()
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _write_part(out, rows):
    pa = _pyarrow()
    name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    atomic_write(Path(out) / name, _part_bytes(pa.Table.from_pylist(rows, schema=schema())))


def merge_parts(out):
    """Merge every part of `out` into one file, atomically: the merged part names the parts it replaces, which are
    removed after it is in place; a crash in between leaves them, and the next read ignores and removes them."""
    tables = _read_parts(out)
    for path in set(_part_files(out)) - set(tables):  # left over from an interrupted merge
        path.unlink(missing_ok=True)
    if len(tables) < 2:
        return
    merged = read_table(out).replace_schema_metadata({MERGED_FROM: json.dumps([p.name for p in tables]).encode()})
    atomic_write(Path(out) / f"part-{time.time_ns()}-merged.parquet", _part_bytes(merged))
    for path in tables:
        path.unlink()


# -------------------------------------------------------------------------------------------- arguments
def parse_queries(text):
    """'0-63' / '0-3,8,10-11' -> sorted seeds (ints >= 0, each once)."""
    seeds = set()
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        try:
            lo, hi = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"queries must be seeds like 0-63 or 0,4,7-9; got {item!r}") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"query range {item!r} is empty or negative: write LOW-HIGH with 0 <= LOW <= HIGH")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def _check_grid(layers, keeps, queries, images):
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))  # in order, each once
    if not layers or not all(isinstance(name, str) and name for name in layers):
        raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}")
    keeps = list(dict.fromkeys(finite_real(k, "keep") for k in np.atleast_1d(keeps).tolist()))
    if not keeps:
        raise ValueError("keeps must hold at least one fraction in (0, 1]")
    for k in keeps:
        if not 0 < k <= 1:
            raise ValueError(f"every keep must be a fraction in (0, 1] (0.05 keeps the top 5% of units), got {k}")
    if queries is None:
        queries = []
    queries = parse_queries(queries) if isinstance(queries, str) else [check_seed(q) for q in queries]
    queries = list(dict.fromkeys(queries))
    images = image_files(images)
    if not queries and not images:
        raise ValueError("the query list is empty: give query seeds (e.g. 0-63) or images")
    return layers, keeps, queries, images


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(images):
    """A directory (its image files, sorted by name) or a list of image files -> absolute paths."""
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"no image directory at {str(folder)!r}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    else:
        files = [Path(p).expanduser() for p in images]
    return list(dict.fromkeys(p.absolute() for p in files))


def _image_queries(source, model, shape, files, seed):
    """{"query", "query_seed", "image", "pixels"} of each image file: read and converted here, in the driver, so
    a bad file fails before any work and workers (on a cluster too) need no access to the files. The images of a
    vae / ae checkpoint go through its encoder here, as `egbas explore --image` does (cheap next to a row); other
    generators invert them in the workers."""
    import torch

    from .inversion import load_image, output_range
    from .layers import evaluating

    config = getattr(model, "egbas_config", None) or {}
    if _is_classifier(model):
        image_shape = shape
    elif config.get("output_shape"):
        image_shape = tuple(config["output_shape"])
    else:
        with torch.no_grad(), evaluating(model):
            image_shape = tuple(model(torch.zeros((1, *shape))).shape[1:])
    value_range = output_range(model)
    tasks = [{"query": f"image:{path}", "query_seed": None, "image": str(path),
              "pixels": load_image(path, image_shape, value_range).numpy()} for path in files]
    if source.kind == "checkpoint" and config.get("model") in ("vae", "ae"):
        from .queries import image_query

        for task in tasks:
            query = image_query(source.arg, config, image=task["image"], seed=seed, progress=False)
            task.update(latent=query.query, psnr=float(query.inversion.psnr))
    return tasks


# ---------------------------------------------------------------------------------------------- the sweep
def sweep(model, layers, keeps=(0.05,), queries=None, n=500, out="egbas-sweep", *, images=None, seed=0,
          workers=None, address=None, reports=False, coverage=False, latent_shape=None, progress=True):
    """Explore every (layer, keep, query) of `model` and write one row each to the Parquet table in `out`.

    model: a torch module, a checkpoint directory, or "faces" (the zoo's face DCGAN). layers: dotted names;
    keeps: fractions in (0, 1]; queries: prior seeds (ints, or a string like "0-63"); images: a directory of image
    files or a list of them (each inverted through the generator with `eg.invert` in a worker; a classifier
    explores the image itself); n: tree nodes per row; seed: of inversion, selection, exploration and baselines.
    workers: embedded processes (default: the CPU count). address: a Ray cluster (default: $RAY_ADDRESS; None and
    unset = embedded). reports: also write each row's report into out/reports/. coverage: also fill reach and
    diversity (the tree against `sample_region` on the same region, min(n, 500) samples; costs a sampler run per
    row; rows already in the table keep theirs). latent_shape: the model's input
    shape when it has no egbas_config. Rows already in `out` are skipped (resume). Returns the whole table
    (pyarrow.Table). Every argument and image is checked, and every layer evaluated, before any worker starts.
    """
    _pyarrow()
    layers, keeps, queries, images = _check_grid(layers, keeps, queries, images)
    n, seed = positive_int(n, "n"), check_seed(seed)
    workers = (os.cpu_count() or 1) if workers is None else positive_int(workers, "workers")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _require("ray", RAY_EXTRA, "a sweep on a Ray cluster (--address)")
    out = check_writable(out)
    source = ModelSource(model)
    loaded = source.load()
    from .demo import query_latent
    from .inversion import latent_shape_of
    from .region import GenerativeRegion

    shape = latent_shape_of(loaded, latent_shape)
    for layer in layers:  # unknown layer / a layer the forward never reaches / a bad shape: now, not in a worker
        GenerativeRegion(loaded, layer, query_latent(loaded, 0, shape))
    sources = [{"query": f"seed:{q}", "query_seed": q, "image": None} for q in queries]
    sources += _image_queries(source, loaded, shape, images, seed)

    out.mkdir(parents=True, exist_ok=True)
    reports_dir = str(out / "reports") if reports else None
    tasks = [{"model": source.name, "layer": layer, "keep": keep, **query, "seed": seed, "n": n,
              "latent_shape": shape, "reports": reports_dir, "coverage": bool(coverage)}
             for layer in layers for keep in keeps for query in sources]
    done = {task_key(r) for r in read_table(out).select(list(KEY)).to_pylist()}
    todo = [t for t in tasks if task_key(t) not in done]
    if progress and len(todo) < len(tasks):
        print(f"egbas sweep: {len(tasks) - len(todo)} of {len(tasks)} rows are already in {out}; running the other "
              f"{len(todo)}", file=sys.stderr)
    if todo:
        engine = _Ray(source, loaded, address) if address else _Pool(source, min(workers, len(todo)))
        _serve(engine, todo, out, progress)
    merge_parts(out)
    return read_table(out)


def _serve(engine, todo, out, progress):
    """Submit every task, then write each row the moment it is done; a lost worker fails its row (Ray, after
    retries) or stops the sweep (a dead pool process breaks the pool: the rest resume on a rerun)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), disable=not progress, desc="sweep", unit="row", dynamic_ncols=True)
    failed = 0
    cancel = True
    try:
        futures = {engine.submit(task): task for task in todo}
        for future in concurrent.futures.as_completed(futures):
            try:
                row = future.result()
            except concurrent.futures.process.BrokenProcessPool as e:
                raise ChildProcessError(f"a worker process died ({e}); the rows written so far are kept: rerun the "
                                        "same command to resume (a script that calls eg.sweep must do it under "
                                        "`if __name__ == '__main__':`, since workers import the script)") from None
            except Exception as e:  # Ray: the task was lost MAX_RETRIES times, or could not be run
                row = {**{k: futures[future][k] for k in SETTINGS}, "status": "failed", "error": _error_text(e),
                       "version": _version(), "finished_at": datetime.datetime.now(datetime.timezone.utc)}
            _write_part(out, [row])
            failed += row["status"] != "ok"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
        cancel = False
    finally:
        bar.close()
        engine.close(cancel)


def _version():
    from . import __version__

    return __version__


# ------------------------------------------------------------------------------------------- summary page
# (column, axis label, log scale) of the per-layer panels of the summary page
SUMMARY_PANELS = (
    ("fidelity", "fidelity (output error, kept units only)", False),
    ("median_boundary_distance", "region size (distance to the boundary)", True),
    ("acceptance", "acceptance (nodes per proposal)", False),
    ("eps_leak", "ε leak (L2 solid, L∞ dashed)", False),
)


def _median_by(rows, layer, column):
    """keeps (sorted) and the median / quartiles of `column` over the ok rows of `layer` at each keep."""
    keeps = sorted({r["keep"] for r in rows if r["layer"] == layer})
    stats = []
    for keep in keeps:
        values = [r[column] for r in rows if r["layer"] == layer and r["keep"] == keep and r[column] is not None]
        stats.append(np.percentile(values, [25, 50, 75]) if values else [math.nan] * 3)
    return np.array(keeps), np.array(stats).reshape(len(keeps), 3)


def _panel_png(rows, column, label, log):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from .report import _figure_png

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    for i, layer in enumerate(layers):
        color = f"C{i % 10}"
        pairs = (("eps_l2_leak", "-"), ("eps_linf_leak", "--")) if column == "eps_leak" else ((column, "-"),)
        for col, style in pairs:
            keeps, s = _median_by(rows, layer, col)
            ax.plot(keeps * 100, s[:, 1], style, marker="o", color=color, label=layer if style == "-" else None)
            ax.fill_between(keeps * 100, s[:, 0], s[:, 2], color=color, alpha=0.15)
    ax.set_xscale("log")
    keeps = sorted({r["keep"] * 100 for r in rows})
    ax.set_xticks(keeps, [f"{k:g}" for k in keeps])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("share of the layer's units kept (%)")
    ax.set_ylabel(label)
    ax.legend(title="layer", fontsize=8)
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def summary_html(table, out):
    """One self-contained HTML page of the sweep table: per-layer medians (band: quartiles over queries) of fidelity,
    region size, acceptance and ε leak rates vs keep, a table per (layer, keep), and the failures."""
    import base64
    import html

    from .report import _CSS

    rows = table.to_pylist()
    ok = [{**r, "eps_l2_leak": 1 - r["eps_l2_in_region"], "eps_linf_leak": 1 - r["eps_linf_in_region"]}
          for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    cards = "".join(
        f'<div class="card wide"><h2>{html.escape(label.split(":")[0].split(" (")[0])}</h2><img alt="{col}" '
        f'src="data:image/png;base64,{base64.b64encode(_panel_png(ok, col, label, log)).decode()}"></div>'
        for col, label, log in SUMMARY_PANELS) if ok else "<p>No row finished yet.</p>"
    lines = []
    for layer in dict.fromkeys(r["layer"] for r in rows):
        for keep in sorted({r["keep"] for r in rows if r["layer"] == layer}):
            group = [r for r in ok if r["layer"] == layer and r["keep"] == keep]
            n_failed = sum(r["layer"] == layer and r["keep"] == keep for r in failed)

            def med(col):
                values = [r[col] for r in group if r[col] is not None]
                return f"{np.median(values):.4g}" if values else "–"

            lines.append(f"<tr><td>{html.escape(layer)}</td><td>{keep:g}</td><td>{len(group)}</td><td>{n_failed}</td>"
                         + "".join(f"<td>{med(c)}</td>" for c in ("units", "fidelity", "median_boundary_distance",
                                                                   "acceptance", "eps_l2_leak", "eps_linf_leak",
                                                                   "output_diversity", "nodes_per_second"))
                         + "</tr>")
    errors = "".join(f"<tr><td>{html.escape(r['layer'])}</td><td>{r['keep']:g}</td><td>{html.escape(r['query'])}"
                     f"</td><td>{html.escape(str(r['error']))}</td></tr>" for r in failed[:50])
    if failed:
        errors = (f'<div class="row"><div class="card"><h2>Failed rows ({len(failed)}; the first 50)</h2><table>'
                  f"<tr><th>layer</th><th>keep</th><th>query</th><th>error</th></tr>{errors}</table></div></div>")
    models = ", ".join(sorted({html.escape(r["model"]) for r in rows})) or "–"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>E-GBAS sweep — {html.escape(str(out))}</title>
<style>{_CSS}</style></head>
<body>
<h1>E-GBAS sweep</h1>
<p class="sub">{len(rows)} rows ({len(failed)} failed) of <code>{html.escape(str(out))}</code>; model {models}.
Lines: median over queries; bands: quartiles.</p>
<div class="row">{cards}</div>
<div class="row"><div class="card"><h2>Per layer and keep (medians over queries)</h2><table>
<tr><th>layer</th><th>keep</th><th>ok</th><th>failed</th><th>units</th><th>fidelity</th><th>boundary dist.</th>
<th>acceptance</th><th>leak L2</th><th>leak L&infin;</th><th>output diversity</th><th>nodes / s</th></tr>
{''.join(lines)}</table>
<p class="note">Fidelity: relative output error with only the kept units (0 = unchanged). Boundary distance: median
distance from the query to the region's boundary along random rays. Leak: share of &epsilon;-ball samples at the
tree's mean distance that fall outside the region (the tree's nodes are all inside).</p></div></div>
{errors}
</body></html>
"""


def write_summary(out):
    """Write out/summary.html (atomically) from the sweep table in `out`. Returns its path."""
    out = Path(out).expanduser()
    if not _part_files(out):
        raise FileNotFoundError(f"no sweep table in {str(out)!r} (no part-*.parquet): run `egbas sweep --out DIR` "
                                "first")
    check_writable(out)
    page = summary_html(read_table(out), out)
    atomic_write(out / "summary.html", page.encode("utf-8"))
    return out / "summary.html"
