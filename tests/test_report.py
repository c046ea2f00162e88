"""Exploration.save and the report helpers: every file, honest numbers, a self-contained page, atomic writes."""
import base64
import io
import json
import os
from pathlib import Path
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from egbas_fast import _files, report
from egbas_fast.exploration import explore
from egbas_fast.region import random_directions
from egbas_fast.region import GenerativeRegion

from .toys import conv_generator, linear_relu, oracle_inside, polytope_exit


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def conv_exploration():
    model = conv_generator()
    query = np.random.default_rng(2).standard_normal((6, 1, 1)).astype(np.float32)
    full = GenerativeRegion(model, "main.2", query)
    units = np.sort(np.random.default_rng(0).choice(full.n_units, 40, replace=False))
    return model, explore(full.restrict(units), n=90, batch=16, seed=1, progress=False)


@pytest.fixture(scope="module")
def saved(conv_exploration, tmp_path_factory):
    _, res = conv_exploration
    out = tmp_path_factory.mktemp("report") / "nested" / "dir"  # created by save
    assert res.save(out, name="toy conv") == out.absolute()
    return out


def test_exactly_the_report_files(saved):
    assert sorted(os.listdir(saved)) == sorted(report.REPORT_FILES)  # no temp file left behind
    for name in report.PNG_FILES:
        with Image.open(saved / name) as im:
            im.verify()


def test_summary_numbers_are_measured(conv_exploration, saved):
    model, res = conv_exploration
    summary = json.loads((saved / "summary.json").read_text())
    e, m = summary["exploration"], summary["methods"]
    assert e["nodes"] == len(res.latents) and e["proposals"] == res.proposals and e["accepted"] == res.accepted
    assert e["acceptance"] == res.acceptance and e["step"] == res.step and e["radius"] == res.radius
    assert e["nodes_per_second"] == pytest.approx(res.accepted / res.seconds)
    assert summary["region"] == {"layer": "main.2", "dim": 6, "n_units": res.region.n_units, "units_selected": 40}
    data = np.load(saved / "latents.npz")
    assert np.array_equal(data["latents"], res.latents) and np.array_equal(data["parents"], res.parents)
    assert np.array_equal(data["units"], res.region.units)
    # in-region rates: the oracle's verdict on the very samples saved
    assert m["egbas"]["in_region_rate"] == oracle_inside("conv", (6, 1, 1), model, res.region, res.latents).mean() == 1.0
    query = res.latents[0]
    mean_dist = np.linalg.norm(res.latents - query, axis=1).mean()
    assert m["egbas"]["mean_distance"] == pytest.approx(mean_dist, rel=1e-6)
    for key in ("eps_l2", "eps_linf"):
        z, inside = data[f"{key}_latents"], data[f"{key}_inside"]
        assert np.array_equal(inside, oracle_inside("conv", (6, 1, 1), model, res.region, z))
        assert m[key]["in_region_rate"] == inside.mean() and m[key]["n"] == len(z)
        # the ε radius matches the E-GBAS samples' mean distance from the query
        assert m[key]["mean_distance"] == pytest.approx(mean_dist, rel=0.1)
        size = np.linalg.norm(z - query, axis=1) if key == "eps_l2" else np.abs(z - query).max(axis=1)
        assert size.max() <= m[key]["eps"] * (1 + 1e-5)
    # diversity: mean pairwise distance of generated outputs (all samples here: fewer than DIVERSITY_SAMPLES)
    for key, z in (("egbas", res.latents), ("eps_l2", data["eps_l2_latents"]), ("eps_linf", data["eps_linf_latents"])):
        with torch.no_grad():
            out = model(torch.tensor(z).reshape(len(z), 6, 1, 1)).reshape(len(z), -1).double().numpy()
        dist = np.sqrt(((out[:, None] - out[None]) ** 2).sum(-1))
        assert m[key]["diversity"] == pytest.approx(dist[np.triu_indices(len(z), 1)].mean(), rel=1e-5)
    # region samples: all inside by the oracle; coverage figures recomputed from the saved latents
    zr = data["region_latents"]
    assert oracle_inside("conv", (6, 1, 1), model, res.region, zr).all() and m["region"]["in_region_rate"] == 1.0
    cov = summary["coverage"]
    reach = np.linalg.norm(res.latents - query, axis=1).mean() / np.linalg.norm(zr - query, axis=1).mean()
    assert cov["reach"] == pytest.approx(reach, rel=1e-5) and len(cov["spread"]) == 3
    with torch.no_grad():
        outs = [model(torch.tensor(z).reshape(len(z), 6, 1, 1)).reshape(len(z), -1).double() for z in (res.latents, zr)]
    assert cov["diversity"] == pytest.approx(float(torch.pdist(outs[0]).mean() / torch.pdist(outs[1]).mean()),
                                             rel=1e-5)
    rs = summary["region_samples"]
    assert rs["method"] == "polytope" and rs["evaluations"] >= len(zr) and rs["ess"] > 0  # main.2: an affine prefix
    hom = summary["homogeneity"]
    assert set(hom) == {"egbas", "region", "eps_l2_inside", "eps_l2_outside", "eps_linf_inside", "eps_linf_outside"}
    assert all(v is None or v >= 0 for v in hom.values())
    shares = summary["profile"]["shares"]
    assert shares == sorted(shares) and 40 / res.region.n_units in shares
    assert np.all(np.diff(summary["profile"]["median_distance"]) <= 1e-12)  # more boundaries, never a larger region


def test_html_is_self_contained(saved):
    html = (saved / "report.html").read_text()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)  # everything but the inlined pictures
    assert not re.search(r"(?i)(?:https?:|ftp:|file:|//[a-z])", text)
    assert not re.search(r"(?i)<(?:link|script|iframe|object|embed)\b", text)
    assert not re.search(r"(?i)url\(|@import", text)
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == len(report.PNG_FILES)
    inlined = [base64.b64decode(s.split(",", 1)[1]) for s in sources]
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert inlined == [(saved / name).read_bytes() for name in report.PNG_FILES]  # the same pictures as the files
    for word in ("E-GBAS", "acceptance", "in region", "diversity", "100.0%"):
        assert word in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed")
def test_page_renders_offline_in_chromium(saved, tmp_path):
    from scripts.screenshot_report import screenshot

    png = screenshot(saved / "report.html", tmp_path / "shot.png", width=1000, height=900)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape == (900, 1000, 3)
    assert (pixels.reshape(-1, 3).std(0) > 20).all()  # text, pictures and plots, not a blank or error page
    assert ((pixels[..., 0] > 180) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum() > 0  # the red ε frames


def test_unwritable_out_dir_fails_before_any_work(conv_exploration, tmp_path):
    _, res = conv_exploration
    blocker = tmp_path / "file"
    blocker.write_text("x")
    calls = []
    region = res.region

    class Spy:  # the same region, but counting every model evaluation
        def __getattr__(self, name):
            calls.append(name)
            return getattr(region, name)

    res_spy = type(res)(**{**res.__dict__, "region": Spy()})
    with pytest.raises(report.OutputDirectoryError, match="not a directory"):
        res_spy.save(blocker / "out")
    with pytest.raises(report.OutputDirectoryError):
        res_spy.save(blocker)
    assert calls == [] and sorted(os.listdir(tmp_path)) == ["file"]
    for bad in (0, -3, 2.5):  # a bad baseline size is refused before the membership re-check runs
        with pytest.raises((ValueError, TypeError), match="n_baseline must be a positive int"):
            report.build_report(res_spy, tmp_path / "out", n_baseline=bad)
    assert calls == [] and sorted(os.listdir(tmp_path)) == ["file"]


def test_unit_order_puts_the_regions_own_units_first_even_when_theta_ties():
    """theta saturates at 1.0 in float32: the selected units must still come first, then the rest by theta."""
    region = type("R", (), {"n_units": 6, "units": np.array([4, 1])})()
    selection = type("S", (), {"theta": np.array([0.2, 1.0, 0.9, 1.0, 1.0, 0.5], np.float32)})()
    np.testing.assert_array_equal(report._unit_order(region, selection), [4, 1, 3, 2, 5, 0])
    np.testing.assert_array_equal(report._unit_order(region, None), [4, 1, 0, 2, 3, 5])


def test_check_writable_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert report.check_writable(target) == target
    assert not (tmp_path / "a").exists()


def test_check_writable_really_tries(tmp_path):
    """A directory that refuses new entries is caught even when os.access would say yes (root, pseudo file
    systems): the check creates and removes a probe, leaving nothing behind."""
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if os.access(readonly, os.W_OK) and os.geteuid() != 0:
            pytest.skip("this file system ignores permission bits")
        if os.geteuid() == 0:  # root writes through 0555: use a directory no one can create entries in
            target = Path("/proc/egbas-no-such-dir/out")
            if not Path("/proc").is_dir():
                pytest.skip("no /proc")
        else:
            target = readonly / "out"
        with pytest.raises(report.OutputDirectoryError, match="cannot create files"):
            report.check_writable(target)
        assert list(readonly.iterdir()) == []
    finally:
        readonly.chmod(0o755)


def test_atomic_write_never_leaves_a_half_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    report.atomic_write(path, b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        report.atomic_write(path, b"new content")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["summary.json"]
    report.atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and (path.stat().st_mode & 0o777) == 0o666 & ~_files._UMASK


# ------------------------------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize("shape,side,channels", [((5, 784), 28, 3), ((5, 3 * 64), 8, 3), ((5, 1, 16, 16), 16, 3),
                                                  ((5, 3, 8, 8), 8, 3), ((5, 10), None, 3)])
def test_to_images_shapes(shape, side, channels):
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    img = report.to_images(x)
    assert img.shape[0] == 5 and img.shape[3] == channels and img.min() >= 0 and img.max() <= 1
    if side:
        assert img.shape[1:3] == (side, side)
    if len(shape) == 4 and shape[1] == 3:
        assert np.allclose(img, (x.transpose(0, 2, 3, 1) + 1) / 2)  # tanh images: (x + 1) / 2


def test_to_images_scales_unbounded_outputs_jointly():
    x = np.array([[0.0, 10.0, 20.0, 40.0]], np.float32)
    assert np.allclose(report.to_images(x)[0, :, :, 0].ravel(), [0, 0.25, 0.5, 1.0])


def test_grid_frames_only_outside_samples():
    images = np.full((3, 4, 4, 3), 0.5, np.float32)
    png = report.grid_png(images, outside=np.array([False, True, False]), cols=3, cell=4)
    grid = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    tile = grid.shape[1] // 3
    red = (grid[..., 0] > 200) & (grid[..., 1] < 60)
    assert red[:, tile:2 * tile].any() and not red[:, :tile].any() and not red[:, 2 * tile:].any()


def test_pca_and_depth():
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((50, 5)) * np.array([10, 3, 1, 0.1, 0.1])
    proj = report.pca_2d(pts)
    c = pts - pts.mean(0)
    cov_eig = np.sort(np.linalg.eigvalsh(c.T @ c))[::-1]
    assert np.allclose(np.sort((proj.astype(np.float64) ** 2).sum(0))[::-1], cov_eig[:2], rtol=1e-4)
    parents = np.array([-1, 0, 0, 1, 3, 2])
    assert report.tree_depth(parents).tolist() == [0, 1, 1, 2, 3, 2]


def test_profile_matches_analytic_polytope_exits():
    model = linear_relu(d=3, n=5)
    query = np.array([0.3, -0.2, 0.1], np.float32)
    region = GenerativeRegion(model, "0", query)
    order = np.array([4, 1, 3, 0, 2])
    dirs = random_directions(16, 3, 0)
    shares = np.array([0.2, 0.6, 1.0])
    cap = 20.0
    prof = report.boundary_profile(region, order, shares, dirs, cap)
    W, b = model[0].weight.detach().double().numpy(), model[0].bias.detach().double().numpy()
    for i, share in enumerate(shares):
        kept = order[:int(round(share * 5))]
        exact = np.minimum(polytope_exit(W[kept], b[kept], query, dirs), cap)
        ratio = (cap / (cap * 1e-4)) ** (1 / 47)  # the profile's geometric grid step
        finite = exact < cap
        assert np.all(prof[i, ~finite] == cap)
        assert np.all(np.abs(np.log(prof[i, finite] / exact[finite])) <= np.log(ratio) / 2 + 1e-9)
