"""Sweeps: the table's rows (checked against the public API), resume, kill -9 then rerun, failing rows, bad input,
the summary page, and the same sweep on a real local Ray cluster. Tiny models and trees: seconds, not minutes."""
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from egbas_fast import models
from egbas_fast.checkpoint import save_checkpoint
from egbas_fast.demo import query_latent
from egbas_fast.region import random_directions, ray_cap

from . import toys


def need(module):
    """The optional extras are installed in CI (.ci/run): missing there is a failure, elsewhere a skip."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


pa = need("pyarrow")
need("pyarrow.parquet")  # pa.parquet is an attribute only once the submodule is imported (random order!)
from egbas_fast import sweeps  # noqa: E402  (needs nothing optional to import, but is useless without pyarrow)

LAYERS, KEEPS, QUERIES, N = ["main.2", "main.5"], [0.1, 0.3], [0, 1], 40


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    bundle = models.build("dcgan", (1, 16, 16), latent_dim=8, width=4)  # untrained: 128 units at main.2 and main.5
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), bundle)


@pytest.fixture(scope="module")
def embedded(checkpoint, tmp_path_factory):
    """2 layers x 2 keeps x 2 queries through the embedded pool (2 workers)."""
    out = tmp_path_factory.mktemp("sweep")
    table = sweeps.sweep(checkpoint, LAYERS, KEEPS, QUERIES, n=N, out=out, workers=2, progress=False)
    return out, table


def keys(table):
    return [sweeps.task_key(r) for r in table.select(list(sweeps.KEY)).to_pylist()]


def without_timings(table):
    rows = table.drop_columns(list(sweeps.TIMING_COLUMNS)).to_pylist()
    return sorted(rows, key=lambda r: (r["layer"], r["keep"], r["query"]))


def test_table_has_one_row_per_setting_with_the_api_figures(embedded, checkpoint):
    import egbas_fast as eg

    out, table = embedded
    assert table.schema.equals(sweeps.schema())
    assert sorted(keys(table)) == sorted((f"checkpoint:{checkpoint}", layer, keep, f"seed:{q}", 0, N)
                                         for layer in LAYERS for keep in KEEPS for q in QUERIES)
    rows = table.to_pylist()
    assert all(r["status"] == "ok" and r["error"] is None for r in rows), [r["error"] for r in rows]
    assert {r["version"] for r in rows} == {eg.__version__}
    for r in rows:
        assert r["units"] == math.ceil(r["keep"] * r["n_units"]) and r["n_units"] == 128 and r["dim"] == 8
        assert 1 < r["nodes"] <= N and r["accepted"] == r["nodes"] - 1
        assert r["acceptance"] == pytest.approx(r["accepted"] / r["proposals"])
        for rate in ("eps_l2_in_region", "eps_linf_in_region"):
            assert 0 <= r[rate] <= 1
        assert r["median_boundary_distance"] > 0 and r["output_diversity"] > 0
        assert r["reach"] is None and r["diversity"] is None  # coverage was not asked for
    # A row is exactly what the public API gives for its settings (computed here, in another process, with
    # another thread count): the query is prior draw `query_seed`, as `egbas explore --query-seed` draws it.
    model = eg.load(checkpoint)
    r = next(r for r in rows if r["layer"] == "main.5" and r["keep"] == 0.1 and r["query_seed"] == 1)
    query = query_latent(model, 1)
    sel = eg.select_boundaries(model, "main.5", query, keep=0.1, seed=0)
    res = eg.explore(sel.region(), n=N, seed=0, progress=False)
    assert (r["units"], r["fidelity"]) == (len(sel.units), pytest.approx(sel.fidelity, rel=1e-6))
    assert (r["nodes"], r["proposals"], r["salvaged"]) == (len(res.latents), res.proposals, res.salvaged)
    eps = eg.sample_ball(sel.region(), N, eps=r["eps_l2"], norm="l2", seed=0)
    assert r["eps_l2_in_region"] == pytest.approx(eps.in_region_rate)
    assert r["mean_distance"] == pytest.approx(np.linalg.norm(res.latents - query, axis=1).mean(), rel=1e-5)
    # the region size is the median of the 64 rays behind explore's default step (measured once, not twice)
    cap = ray_cap(sel.region())
    rays = sel.region().boundary_distance(random_directions(64, 8, 0), max_distance=cap, tol=1e-3 * cap)
    assert r["median_boundary_distance"] == pytest.approx(float(np.median(rays)), rel=1e-6)
    assert r["step"] == pytest.approx(float(np.median(rays)), rel=1e-6)
    # the table is plain Parquet: one merged part, readable by pyarrow without our code (the parts, not the whole
    # folder: another test may have put summary.html or reports/ beside them)
    parts = [str(p) for p in out.glob("part-*.parquet")]
    assert len(parts) == 1
    assert pa.parquet.read_table(parts).num_rows == len(rows)


@pytest.mark.filterwarnings("ignore:sample_region mixes poorly")
def test_coverage_rows_are_the_api_coverage(checkpoint, tmp_path):
    """--coverage fills reach and diversity with what eg.coverage gives against eg.sample_region (seed + 1)."""
    import egbas_fast as eg

    table = sweeps.sweep(checkpoint, ["main.5"], [0.3], [1], n=N, out=tmp_path / "cov", workers=1, coverage=True,
                         progress=False)
    (r,) = table.to_pylist()
    model = eg.load(checkpoint)
    region = eg.select_boundaries(model, "main.5", query_latent(model, 1), keep=0.3, seed=0).region()
    res = eg.explore(region, n=N, seed=0, progress=False)
    rs = eg.sample_region(region, n=N, seed=1, progress=False)
    cov = eg.coverage(region, res.latents, rs.latents, seed=0)
    assert r["status"] == "ok" and r["reach"] > 0 and r["diversity"] > 0
    assert (r["reach"], r["diversity"]) == (pytest.approx(cov.reach, rel=1e-5), pytest.approx(cov.diversity, rel=1e-5))


def test_rerun_skips_finished_rows_and_adds_new_ones(embedded, checkpoint, tmp_path):
    out, table = embedded
    copy = tmp_path / "copy"
    copy.mkdir()
    for part in out.glob("part-*.parquet"):
        (copy / part.name).write_bytes(part.read_bytes())
    again = sweeps.sweep(checkpoint, LAYERS, KEEPS, QUERIES, n=N, out=copy, workers=1, progress=False)
    assert again.equals(table)  # nothing recomputed: the same rows, timings included
    more = sweeps.sweep(checkpoint, ["main.5"], KEEPS, [1, 2], n=N, out=copy, workers=1, progress=False)
    assert sorted(keys(more)) == sorted(set(keys(table)) | {k[:3] + ("seed:2", 0, N) for k in keys(table)
                                                            if k[1] == "main.5"})
    old = {sweeps.task_key(r): r["finished_at"] for r in table.to_pylist()}
    assert all(r["finished_at"] == old[sweeps.task_key(r)] for r in more.to_pylist() if r["query"] != "seed:2")


def test_a_row_marches_its_rays_once(checkpoint, monkeypatch):
    """The row's region size comes from the 64 rays explore measured for its default step: one ray march per row."""
    import egbas_fast as eg
    from egbas_fast.region import GenerativeRegion

    marches = []
    original = GenerativeRegion.boundary_distance
    monkeypatch.setattr(GenerativeRegion, "boundary_distance",
                        lambda self, *a, **k: marches.append(1) or original(self, *a, **k))
    task = {"model": "m", "layer": "main.5", "keep": 0.1, "query": "seed:1", "query_seed": 1, "image": None,
            "seed": 0, "n": 20, "latent_shape": None, "reports": None, "coverage": False}
    row = sweeps.run_row(eg.load(checkpoint), task)
    assert row["status"] == "ok", row["error"]
    assert len(marches) == 1 and row["median_boundary_distance"] == pytest.approx(row["step"])


def test_failing_rows_are_recorded_and_the_sweep_goes_on(tmp_path):
    model = toys.fails_on_some_queries()
    queries = list(range(6))
    planted = {q for q in queries if query_latent(model, q, (4,))[0] < -1.0}
    assert 0 < len(planted) < len(queries)  # the planted failure hits some queries and spares others
    table = sweeps.sweep(model, ["body.1"], [0.5], queries, n=20, out=tmp_path, workers=1, latent_shape=(4,),
                         progress=False)
    rows = {r["query_seed"]: r for r in table.to_pylist()}
    assert sorted(rows) == queries
    for q, r in rows.items():
        if q in planted:
            assert r["status"] == "failed" and "planted failure for this query" in r["error"]
            assert r["fidelity"] is None and r["nodes"] is None
        else:
            assert r["status"] == "ok" and r["error"] is None and r["nodes"] > 1
    page = sweeps.summary_html(table, tmp_path)  # the page lists the failures with their errors
    assert f"Failed rows ({len(planted)};" in page and page.count("planted failure for this query") == len(planted)


def test_reports_are_written_per_row(tmp_path):
    model = toys.leaky_generator()
    table = sweeps.sweep(model, ["1"], [0.5], [3], n=20, out=tmp_path, workers=1, latent_shape=(4,), reports=True,
                         progress=False)
    (row,) = table.to_pylist()
    assert row["status"] == "ok", row["error"]
    report = tmp_path / "reports" / "1-keep0.5-seed_3-seed0-n20"
    summary = json.loads((report / "summary.json").read_text())
    assert (report / "report.html").is_file()
    assert summary["exploration"]["nodes"] == row["nodes"] and summary["selection"]["fidelity"] == row["fidelity"]


def egbas(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "egbas_fast.cli", *map(str, argv)], capture_output=True,
                          text=True, **kwargs)


def one_error_line(stderr):
    """One `egbas[ sweep]: error:` line and no traceback (an editable dev install may print its rebuild lines first)."""
    return [line for line in stderr.splitlines() if line.startswith("egbas")] == [stderr.splitlines()[-1]] \
        and ": error: " in stderr.splitlines()[-1] and "Traceback" not in stderr


def test_kill_9_then_rerun_gives_the_complete_table(checkpoint, tmp_path):
    out = tmp_path / "table"
    argv = [sys.executable, "-m", "egbas_fast.cli", "sweep", "--checkpoint", checkpoint, "--layers", "main.2,main.5",
            "--keeps", "0.1,0.3", "--queries", "0-2", "--n", N, "--workers", 1, "--out", out, "--quiet"]
    proc = subprocess.Popen(list(map(str, argv)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: the pool's workers die with it
    try:
        deadline = time.monotonic() + 180
        while len(list(out.glob("part-*.parquet"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the sweep ended before it was killed: {proc.stderr.read().decode()}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    parts = list(out.glob("part-*.parquet"))
    assert 2 <= len(parts) < 12
    for part in parts:  # every written part is whole
        assert pa.parquet.read_table(part).num_rows == 1
    run = egbas(*argv[3:])
    assert run.returncode == 0, run.stderr
    assert "table:" in run.stdout and "12 rows, 0 failed" in run.stdout
    table = sweeps.read_table(out)
    assert table.num_rows == 12 and len(set(keys(table))) == 12
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert [p.name for p in out.glob("*.parquet")] == [p.name for p in out.glob("part-*-merged.parquet")]
    assert not list(out.glob(".*"))  # no temp file left behind


def test_an_interrupted_merge_is_finished_by_the_next_run(embedded, tmp_path):
    out, table = embedded
    for row in table.to_pylist():  # one part per row, as a killed sweep leaves them
        sweeps._write_part(tmp_path, [row])
    sources = {path: path.read_bytes() for path in tmp_path.glob("part-*.parquet")}
    sweeps.merge_parts(tmp_path)
    assert len(list(tmp_path.glob("part-*.parquet"))) == 1 and not any(path.exists() for path in sources)
    for path, data in sources.items():  # the crash: the merged part is in place, its sources not yet removed
        path.write_bytes(data)
    assert sorted(keys(sweeps.read_table(tmp_path))) == sorted(keys(table))  # no row twice
    sweeps.merge_parts(tmp_path)  # the next run finishes the merge
    assert len(list(tmp_path.glob("part-*.parquet"))) == 1 and not any(path.exists() for path in sources)
    assert sorted(keys(sweeps.read_table(tmp_path))) == sorted(keys(table))


@pytest.mark.parametrize("args, message", [
    (["--layers", "main.2,nope", "--queries", "0-3"], "unknown layer 'nope'"),
    (["--layers", "main.2", "--keeps", "0.1,0", "--queries", "0-3"], "must be in (0, 1]"),
    (["--layers", "main.2", "--keeps", "1.5", "--queries", "0-3"], "must be in (0, 1]"),
    (["--layers", "main.2", "--queries", "5-3"], "is empty"),
    (["--layers", "main.2", "--queries", ","], "query list is empty"),
    (["--layers", "main.2", "--queries", "0", "--out", "{file}/sub"], "is not a directory"),
])
def test_bad_input_is_one_line_before_any_work(checkpoint, tmp_path, args, message):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = tmp_path / "out"
    args = [a.replace("{file}", str(blocker)) for a in args]
    if "--out" not in args:
        args += ["--out", str(out)]
    run = egbas("sweep", "--checkpoint", checkpoint, *args)
    assert run.returncode == 2
    assert one_error_line(run.stderr) and message in run.stderr, run.stderr
    assert not out.exists()  # nothing written, no worker started


def test_api_bad_input_raises_before_any_work(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="query list is empty"):
        sweeps.sweep(checkpoint, ["main.2"], [0.1], [], out=tmp_path / "a")
    with pytest.raises(ValueError, match=r"keep must be a fraction in \(0, 1\]"):
        sweeps.sweep(checkpoint, ["main.2"], [0.1, -0.2], [0], out=tmp_path / "a")
    with pytest.raises(ValueError, match="unknown layer 'main.99'"):
        sweeps.sweep(checkpoint, ["main.2", "main.99"], [0.1], [0], out=tmp_path / "a")
    with pytest.raises(ValueError, match="non-empty list of layer names"):
        sweeps.sweep(checkpoint, [], [0.1], [0], out=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert sweeps.parse_queries("0-3, 7,2-4") == [0, 1, 2, 3, 4, 7]


def test_summary_page_is_one_self_contained_file(embedded, tmp_path):
    out, table = embedded
    run = egbas("sweep", "--summary", out)
    assert run.returncode == 0, run.stderr
    page = (out / "summary.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(sweeps.SUMMARY_PANELS)
    assert "src=\"http" not in page and "<script" not in page  # opens offline
    for layer in LAYERS:
        assert f"<td>{layer}</td><td>0.1</td><td>2</td><td>0</td>" in page  # 2 ok rows, 0 failed per setting
    empty = egbas("sweep", "--summary", tmp_path)
    assert empty.returncode == 2 and "no sweep table" in empty.stderr and one_error_line(empty.stderr)


def test_duckdb_reads_the_table_as_the_readme_shows(embedded):
    duckdb = need("duckdb")
    out, table = embedded
    rows = duckdb.sql(f"SELECT layer, keep, count(*) AS n, median(fidelity) AS fidelity "
                      f"FROM read_parquet('{out}/*.parquet') WHERE status = 'ok' GROUP BY ALL ORDER BY ALL").fetchall()
    assert [(layer, keep, n) for layer, keep, n, _ in rows] == [(l, k, 2) for l in LAYERS for k in KEEPS]


@pytest.fixture(scope="session")
def ray_cluster():
    """ONE real local Ray cluster for the test session (Ray 2.60 has no local_mode)."""
    ray = need("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # token auth is on by default since 2.59
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=10**8, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_the_same_sweep_on_a_ray_cluster_gives_the_same_table(embedded, checkpoint, ray_cluster, tmp_path):
    out, table = embedded
    on_ray = sweeps.sweep(checkpoint, LAYERS, KEEPS, QUERIES, n=N, out=tmp_path, address=ray_cluster,
                          progress=False)
    assert without_timings(on_ray) == without_timings(table)
    workers = set(on_ray.column("worker").to_pylist())
    assert workers.isdisjoint(set(table.column("worker").to_pylist()))  # really ran elsewhere


def test_the_cli_with_an_address_connects_to_the_cluster(embedded, checkpoint, ray_cluster, tmp_path):
    out, table = embedded
    run = egbas("sweep", "--checkpoint", checkpoint, "--layers", "main.5", "--keeps", "0.1", "--queries", "1",
                "--n", N, "--address", ray_cluster, "--out", tmp_path, "--quiet")
    assert run.returncode == 0, run.stderr
    (row,) = without_timings(sweeps.read_table(tmp_path))
    assert row in without_timings(table)


def _pngs(folder, model, count):
    """`count` PNG files of the model's own outputs (random latents): images it can reproduce."""
    import torch
    from PIL import Image

    folder.mkdir()
    with torch.no_grad():
        images = model.eval()(torch.randn(count, 8, generator=torch.Generator().manual_seed(0)))  # (k, 1, 16, 16)
    for i, image in enumerate(images):
        pixels = ((image[0].numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"face{i}.png")
    return sorted(folder.glob("*.png"))


def test_image_queries_are_inverted_in_the_workers(checkpoint, tmp_path):
    import egbas_fast as eg

    model = eg.load(checkpoint)
    files = _pngs(tmp_path / "images", model, 2)
    (tmp_path / "images" / "notes.txt").write_text("not an image: ignored")
    table = sweeps.sweep(checkpoint, ["main.2"], [0.3], None, n=20, out=tmp_path / "out", images=tmp_path / "images",
                         workers=1, progress=False)
    rows = sorted(table.to_pylist(), key=lambda r: r["image"])
    assert [r["image"] for r in rows] == [str(f) for f in files]
    assert [r["query"] for r in rows] == [f"image:{f}" for f in files] and {r["query_seed"] for r in rows} == {None}
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    inversion = eg.invert(model, files[0], seed=0, progress=False)  # what the worker did, redone here
    assert rows[0]["psnr"] == pytest.approx(inversion.psnr, rel=1e-4) and rows[0]["psnr"] > 15
    sel = eg.select_boundaries(model, "main.2", inversion.latent, keep=0.3, seed=0)
    assert rows[0]["fidelity"] == pytest.approx(sel.fidelity, rel=1e-5)


def test_bad_images_fail_before_any_work(checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        sweeps.sweep(checkpoint, ["main.2"], [0.1], None, out=tmp_path / "out", images=tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read .*broken.png"):
        sweeps.sweep(checkpoint, ["main.2"], [0.1], None, out=tmp_path / "out", images=tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="no image directory"):
        sweeps.sweep(checkpoint, ["main.2"], [0.1], None, out=tmp_path / "out", images=tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()


def test_images_of_a_vae_go_through_its_encoder(tmp_path):
    import egbas_fast as eg
    from egbas_fast.queries import image_query

    bundle = models.build("vae", (1, 16, 16), latent_dim=8, width=4, extra_layers=0)
    checkpoint = save_checkpoint(tmp_path / "vae", bundle)
    files = _pngs(tmp_path / "images", eg.load(checkpoint), 1)
    layer = next(name for name, module in eg.load(checkpoint).named_modules() if type(module).__name__ == "ReLU")
    table = sweeps.sweep(checkpoint, [layer], [0.5], None, n=20, out=tmp_path / "out", images=files, workers=1,
                         progress=False)
    (row,) = table.to_pylist()
    assert row["status"] == "ok", row["error"]
    encoded = image_query(checkpoint, eg.load(checkpoint).egbas_config, image=files[0], progress=False)
    assert encoded.inversion.method == "encoder" and row["psnr"] == pytest.approx(encoded.inversion.psnr)
    sel = eg.select_boundaries(eg.load(checkpoint), layer, encoded.query, keep=0.5, seed=0)
    assert row["fidelity"] == pytest.approx(sel.fidelity, rel=1e-5)
