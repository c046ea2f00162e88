"""RED-Net super-resolution: skip topology, degradation, metrics, restoration of any image, CLI, training."""
import json

import numpy as np
import pytest
import torch

import egbas_fast as eg
from egbas_fast import checkpoint, cli, photos, sr
from egbas_fast.rednet import REDNet, build_restorer, skip_pairs

skimage = pytest.importorskip("skimage")  # dev extra: the reference PSNR / SSIM / YCbCr and the photos


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def camera():
    """scikit-image's camera photo (512 x 512 greyscale), read from the installed package."""
    return photos.load("skimage")[2].pixels


@pytest.fixture(scope="module")
def astronaut():
    return photos.load("skimage")[0].pixels


def _random_net(depth, width=3, channels=1, seed=0):
    torch.manual_seed(seed)
    net = REDNet(channels, depth, width).eval()
    with torch.no_grad():  # small random weights everywhere, the last layer included (build_restorer zeroes it)
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net


# ------------------------------------------------------------------------------------------------ topology
def test_red30_skips_are_the_papers():
    """RED30: conv 2, 4, ..., 14 go to their mirrors deconv 13, 11, ..., 1; the input goes to the output."""
    assert skip_pairs(15) == [(0, 15), (2, 13), (4, 11), (6, 9), (8, 7), (10, 5), (12, 3), (14, 1)]
    assert skip_pairs(5) == [(0, 5), (2, 3), (4, 1)]
    net = REDNet(1, 15, 64)
    assert len(net.encoder) == 15 and len(net.decoder) + 1 == 15  # 15 conv + 15 deconv layers
    assert sum(p.numel() for p in net.parameters()) == 2 * 14 * (64 * 64 * 9 + 64) + 2 * (64 * 9) + 64 + 1


def _reference_forward(net, x):
    """RED-Net written out by hand from the paper, with the module's weights: conv layer k's rectified output is
    added to the output of deconv layer depth - k, for k = 2, 4, ... < depth, before that layer's ReLU; the input
    is added to the last layer's output."""
    n = net.depth
    conv = [None] + [net.encoder[i][0] for i in range(n)]  # 1-based
    deconv = [None] + [net.decoder[j].deconv for j in range(n - 1)] + [net.out]
    feats = {0: x}
    h = x
    for k in range(1, n + 1):
        h = torch.relu(conv[k](h))
        feats[k] = h
    for j in range(1, n):
        h = deconv[j](h)
        mirror = n - j
        if mirror % 2 == 0 and mirror >= 2:
            h = h + feats[mirror]
        h = torch.relu(h)
    return deconv[n](h) + x


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6, 7, 15])
def test_forward_equals_the_hand_written_topology(depth):
    net = _random_net(depth)
    x = torch.rand(2, 1, 13, 11)
    with torch.no_grad():
        assert torch.allclose(net(x), _reference_forward(net, x), atol=1e-5)


def test_the_reference_detects_a_missing_or_misplaced_skip():
    """The comparison above can fail: dropping one skip, or sending it to the wrong deconv layer, changes the
    output far beyond the tolerance."""
    net = _random_net(5)
    x = torch.rand(2, 1, 13, 11)
    with torch.no_grad():
        want = _reference_forward(net, x)
        for broken in ({5: 0, 1: 4}, {5: 0, 3: 2}, {5: 0, 3: 4, 1: 2}, {5: 0, 3: 2, 1: 4, 2: 2}):
            net.skips = broken
            assert not torch.allclose(net(x), want, atol=1e-3), broken


def test_each_decoder_layer_sums_exactly_its_mirror_before_the_relu():
    """Depth 5, recorded with hooks: deconv 1 and 3 get conv 4 and conv 2 added before their ReLU; deconv 2 and 4
    (mirrors of the odd conv layers 3 and 1) get nothing; the output is the last deconv plus the input."""
    net = _random_net(5)
    x = torch.rand(1, 1, 9, 9)
    seen = {}
    modules = {**{f"c{k + 1}": net.encoder[k] for k in range(5)}, **{f"d{j + 1}": net.decoder[j] for j in range(4)},
               **{f"pre{j + 1}": net.decoder[j].deconv for j in range(4)}, "d5": net.out}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.clone()))
               for name, m in modules.items()]
    try:
        with torch.no_grad():
            y = net(x)
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(seen["d1"], torch.relu(seen["pre1"] + seen["c4"]), atol=1e-6)
    assert torch.allclose(seen["d3"], torch.relu(seen["pre3"] + seen["c2"]), atol=1e-6)
    assert torch.allclose(seen["d2"], torch.relu(seen["pre2"]), atol=1e-6)
    assert torch.allclose(seen["d4"], torch.relu(seen["pre4"]), atol=1e-6)
    assert not torch.allclose(seen["d1"], torch.relu(seen["pre1"]), atol=1e-3)  # the skip is not negligible
    assert torch.allclose(y, seen["d5"] + x, atol=1e-6)


# --------------------------------------------------------------------------------------------- degradation
def _keys_cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0))


def _resample_matrix(n_in, n_out):
    """(n_out, n_in) weights of an antialiased Keys cubic (a = -0.5) resampling, pixel centres aligned
    ((i + 0.5) * n_in / n_out), the kernel stretched by the shrink factor: the textbook definition."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - 2 * stretch + 0.5), 0), min(int(centre + 2 * stretch + 0.5), n_in)
        taps = np.arange(lo, hi)
        w = _keys_cubic((taps - centre + 0.5) / stretch)
        m[i, lo:hi] = w / w.sum()
    return m


def _fixed_point(m):
    """Weights as 22-bit fixed point, rounded half away from zero (Pillow's 8-bit resampling arithmetic)."""
    k = m * (1 << 22)
    return np.where(k < 0, np.trunc(k - 0.5), np.trunc(k + 0.5)).astype(np.int64)


def _reference_resize(img, w_out, h_out, exact=True):
    """Separable resize, horizontal pass then vertical, each rounded and clipped to uint8. exact: with Pillow's
    fixed-point weights (bit-exact); otherwise in float64 (the ideal filter)."""
    mw, mh = _resample_matrix(img.shape[1], w_out), _resample_matrix(img.shape[0], h_out)
    if not exact:
        x = np.clip(np.rint(img.astype(np.float64) @ mw.T), 0, 255)
        return np.clip(np.rint(mh @ x), 0, 255).astype(np.uint8)
    x = np.clip((img.astype(np.int64) @ _fixed_point(mw).T + (1 << 21)) >> 22, 0, 255)
    return np.clip((_fixed_point(mh) @ x + (1 << 21)) >> 22, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degradation_equals_a_reference_bicubic(scale, camera):
    img = camera[:101, :67]  # odd sizes: cropped to multiples of the scale first
    hr, lr, up = sr.degrade(img, scale)
    h, w = 101 - 101 % scale, 67 - 67 % scale
    assert hr.shape == (h, w) and lr.shape == (h // scale, w // scale) and up.shape == (h, w)
    assert np.array_equal(hr, img[:h, :w])
    assert np.array_equal(lr, _reference_resize(hr, w // scale, h // scale))
    assert np.array_equal(up, _reference_resize(lr, w, h))
    for got, want in ((lr, _reference_resize(hr, w // scale, h // scale, exact=False)),
                      (up, _reference_resize(lr, w, h, exact=False))):  # the float filter: +-1 level
        assert np.abs(got.astype(int) - want).max() <= 1


def test_degradation_of_colour_is_per_channel_and_constant_stays_constant(astronaut):
    hr, lr, up = sr.degrade(astronaut[:60, :90], 3)
    for c in range(3):
        assert np.array_equal(lr[..., c], sr.degrade(astronaut[:60, :90, c], 3)[1])
    flat = np.full((24, 30, 3), 77, np.uint8)
    assert (sr.degrade(flat, 2)[2] == 77).all()


def test_degrade_refuses_a_bad_scale_and_a_tiny_image():
    with pytest.raises(ValueError, match="scale must be one of 2, 3, 4"):
        sr.degrade(np.zeros((8, 8), np.uint8), 5)
    with pytest.raises(ValueError, match="smaller than the scale"):
        sr.degrade(np.zeros((2, 8), np.uint8), 3)


# ------------------------------------------------------------------------------------------------- metrics
def test_luminance_is_matlab_rgb2ycbcr(astronaut):
    from skimage.color import rgb2ycbcr
    y = sr.luminance(astronaut)
    assert np.allclose(y, rgb2ycbcr(astronaut)[..., 0] / 255, atol=1e-12)
    grey = astronaut[..., 0]
    assert np.allclose(sr.luminance(grey), rgb2ycbcr(np.dstack([grey] * 3))[..., 0] / 255, atol=1e-12)
    ycc = sr.rgb_to_ycbcr(astronaut / 255.0)
    assert np.allclose(sr.ycbcr_to_rgb(ycc), astronaut / 255.0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_and_ssim_equal_scikit_image(seed, camera):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 90, size=2)
    border = int(rng.integers(0, 5))
    ref = sr.luminance(camera[:h, :w])
    noisy = np.clip(ref + rng.normal(0, 0.02 + 0.05 * seed, ref.shape), 0, 1)
    crop = (slice(border, h - border), slice(border, w - border))
    assert sr.psnr(noisy, ref, border) == pytest.approx(
        peak_signal_noise_ratio(ref[crop], noisy[crop], data_range=1.0), abs=1e-10)
    assert sr.ssim(noisy, ref, border) == pytest.approx(structural_similarity(
        ref[crop], noisy[crop], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
        abs=1e-10)
    assert sr.ssim(ref, ref, border) == pytest.approx(1.0) and sr.psnr(ref, ref) == float("inf")


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="same size"):
        sr.psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 11x11"):
        sr.ssim(np.zeros((12, 12)), np.zeros((12, 12)), border=1)


# --------------------------------------------------------------------------------------------- restoration
@pytest.mark.parametrize("shape", [(37, 53), (16, 16), (5, 70)])
def test_tiles_give_the_one_pass_result_on_odd_sizes(shape):
    net = _random_net(3, width=4)
    y = torch.rand(1, *shape)
    with torch.no_grad():
        whole = net(y[None])[0].clamp(0, 1)
    for tile in (4, 7, 16, 1000):
        assert torch.allclose(sr.run_network(net, y, tile=tile), whole, atol=1e-5), tile


def test_untrained_network_is_bicubic_for_grey_rgb_and_rgba(astronaut):
    """build_restorer starts as the identity (last layer zero), so super-resolving gives bicubic upscaling back,
    through the YCbCr round trip, within one grey level; odd sizes and alpha planes keep their layout."""
    net = build_restorer(1, depth=2, width=4).rednet.eval()
    rgb = astronaut[:23, :31]
    for pixels in (rgb, rgb[..., 1]):
        out, alpha = sr.super_resolve(net, pixels, 3)
        want = sr.bicubic(pixels, (93, 69))
        assert out.shape == want.shape and alpha is None
        assert np.abs(out.astype(int) - want).max() <= 1
    alpha_in = (np.arange(23 * 31).reshape(23, 31) % 256).astype(np.uint8)
    out, alpha = sr.super_resolve(net, rgb, 2, alpha=alpha_in)
    assert out.shape == (46, 62, 3) and np.array_equal(alpha, sr.bicubic(alpha_in, (62, 46)))


def test_run_network_refuses_the_wrong_channels():
    with pytest.raises(ValueError, match=r"takes \(1, H, W\)"):
        sr.run_network(_random_net(2), torch.rand(3, 8, 8))


# ------------------------------------------------------------------------------------------ training, CLI
@pytest.fixture(scope="module")
def tiny_photos(camera, astronaut):
    return [photos.Photo("camera", camera[:96, :96]), photos.Photo("astronaut", astronaut[:80, :120])]


TINY = dict(width=4, depth=2, steps_per_epoch=3, patch=16, batch_size=4, progress=False)


def test_training_lowers_the_error_and_resume_is_bit_identical(tmp_path, tiny_photos):
    straight = sr.train_rednet(tmp_path / "a", epochs=2, photos=tiny_photos, **TINY)
    sr.train_rednet(tmp_path / "b", epochs=1, photos=tiny_photos, **TINY)
    resumed = sr.train_rednet(tmp_path / "b", epochs=2, photos=tiny_photos, resume=True, **TINY)
    a, b = checkpoint.read_checkpoint(straight), checkpoint.read_checkpoint(resumed)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert a["history"]["mse"] == b["history"]["mse"] and len(a["history"]["val_gain_db"]) == 2
    net = eg.load(straight)
    assert isinstance(net, REDNet) and not net.training and net.egbas_config["scale"] == 2
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        sr.train_rednet(tmp_path / "a", epochs=3, photos=tiny_photos, **TINY)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fitting_one_batch_beats_bicubic(seed):
    """Steps on a fixed batch of sharp-edged blocks (which bicubic upscaling blurs) lower the MSE well below
    bicubic's: the residual path learns."""
    rng = np.random.default_rng(seed)
    blocks = np.kron(rng.integers(0, 2, (12, 12)) * 200 + 30, np.ones((7, 7))).astype(np.uint8)
    torch.manual_seed(seed)
    net = build_restorer(1, depth=2, width=8).rednet
    x, y = sr.TrainingPairs([photos.Photo("blocks", blocks)], 2, patch=24).batch(8, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    bicubic_mse = torch.mean((x - y) ** 2).item()
    for _ in range(80):
        loss = torch.mean((net(x) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * bicubic_mse


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_photos):
    return sr.train_rednet(tmp_path_factory.mktemp("ck") / "red", epochs=1, photos=tiny_photos, **TINY)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P"])
def test_cli_sr_writes_the_upscaled_image(tmp_path, tiny_checkpoint, astronaut, mode, capsys):
    from PIL import Image
    src = Image.fromarray(astronaut[:21, :17]).convert(mode)
    src.save(tmp_path / "in.png")
    assert cli.main(["sr", "--checkpoint", str(tiny_checkpoint), "--image", str(tmp_path / "in.png"),
                     "--out", str(tmp_path / "out.png"), "--tile", "16"]) == 0
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (34, 42)
        assert out.mode == {"L": "L", "RGB": "RGB", "RGBA": "RGBA", "LA": "LA", "P": "RGB"}[mode]


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_cli_sr_corrupt_image_is_one_clear_error(tmp_path, tiny_checkpoint, astronaut, content, capsys):
    from PIL import Image
    bad = tmp_path / "bad.png"
    if content == "truncated":
        Image.fromarray(astronaut[:64, :64]).save(bad)
        bad.write_bytes(bad.read_bytes()[:400])
    else:
        bad.write_bytes(content)
    assert cli.main(["sr", "--checkpoint", str(tiny_checkpoint), "--image", str(bad),
                     "--out", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("egbas: error: cannot read image") and "bad.png" in err[0]
    assert not (tmp_path / "out.png").exists()


def test_cli_sr_refuses_a_non_rednet_checkpoint_and_a_lossy_output(tmp_path, tiny_checkpoint, capsys):
    from egbas_fast import models
    other = checkpoint.save_checkpoint(tmp_path / "ae", models.build("ae", (1, 8, 8), latent_dim=2, width=2))
    assert cli.main(["sr", "--checkpoint", str(other), "--image", "x.png", "--out", str(tmp_path / "o.png")]) == 2
    assert "not a rednet" in capsys.readouterr().err
    assert cli.main(["sr", "--checkpoint", str(tiny_checkpoint), "--image", "x.png",
                     "--out", str(tmp_path / "o.jpg")]) == 2
    assert "lossless" in capsys.readouterr().err


def test_sr_eval_writes_per_image_and_mean_rows(tmp_path, tiny_checkpoint, capsys):
    assert cli.main(["sr-eval", "--checkpoint", str(tiny_checkpoint), "--splits", "skimage",
                     "--out", str(tmp_path / "ev")]) == 0
    results = json.loads((tmp_path / "ev" / "sr_eval.json").read_text())
    rows = results[str(tiny_checkpoint)]["skimage"]
    assert [r["image"] for r in rows] == [n.rsplit(".", 1)[0] for n in photos.SKIMAGE] + ["mean"]
    assert rows[-1]["psnr_bicubic"] == pytest.approx(np.mean([r["psnr_bicubic"] for r in rows[:-1]]))
    assert all(r["psnr_gain"] == pytest.approx(r["psnr_rednet"] - r["psnr_bicubic"]) for r in rows)
    assert "mean" in capsys.readouterr().out


def test_train_cli_checks_rednet_arguments(tmp_path, capsys):
    assert cli.main(["train", "--model", "rednet", "--data", "mnist5k", "--out", str(tmp_path / "r")]) == 2
    assert "photos" in capsys.readouterr().err
    assert cli.main(["train", "--model", "ae", "--scale", "2", "--out", str(tmp_path / "r")]) == 2
    assert "only apply to --model rednet" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------------- zoo
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_zoo_rednet_restores_a_never_seen_photo_better_than_bicubic(scale, astronaut):
    """The shipped weights: eval mode, C read from the first conv, the input's shape back, and a higher PSNR than
    bicubic on a 120 x 120 crop of a photo it never saw (its measured gain there is at least twice the margin)."""
    net = eg.zoo.rednet(scale)
    assert isinstance(net, REDNet) and not net.training and net.encoder[0][0].in_channels == 1
    assert net.egbas_config["scale"] == scale
    x = torch.rand(2, 1, 17, 23)
    with torch.no_grad():
        assert net(x).shape == x.shape and net(x).dtype == torch.float32
    hr, _, up = sr.degrade(astronaut[100:220, 180:300], scale)
    y_hr, y_up = sr.luminance(hr), sr.luminance(up)
    gain = sr.psnr(sr.restore_luminance(net, y_up), y_hr, scale) - sr.psnr(y_up, y_hr, scale)
    assert gain > 0.2


def test_zoo_rednet_refuses_other_scales():
    with pytest.raises(ValueError, match="scale must be 2, 3 or 4"):
        eg.zoo.rednet(5)


# ------------------------------------------------------------------------------------------------ explanation
def test_explore_a_rednet_layer_around_an_image(tmp_path, tiny_checkpoint, astronaut, capsys):
    """`egbas explore --image` on a rednet: the query is the upscaled Y of the image's centre, the region lives in
    input space, and every tree node is certified inside by a plain hook on the RED-Net's own layer."""
    from PIL import Image
    from egbas_fast.layers import layer_output
    Image.fromarray(astronaut[200:240, 200:240]).save(tmp_path / "in.png")
    out = tmp_path / "report"
    assert cli.main(["explore", "--checkpoint", str(tiny_checkpoint), "--layer", "encoder.1", "--image",
                     str(tmp_path / "in.png"), "--n", "30", "--keep", "0.2", "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "egbas.png").is_file()
    saved = np.load(out / "latents.npz")
    latents, units = saved["latents"], saved["units"]
    net, scale = sr.load_network(tiny_checkpoint)
    query = sr.explore_query(astronaut[200:240, 200:240], scale)
    assert latents.shape[1] == query.numel() and np.allclose(latents[0], query.flatten().numpy(), atol=1e-6)
    signs = layer_output(net, "encoder.1", torch.from_numpy(latents).view(-1, *query.shape))[:, units] > 0
    assert len(latents) > 1 and (signs == signs[0]).all()
    assert cli.main(["explore", "--checkpoint", str(tiny_checkpoint), "--layer", "encoder.1",
                     "--out", str(tmp_path / "r2")]) == 2
    assert "pass --image" in capsys.readouterr().err
