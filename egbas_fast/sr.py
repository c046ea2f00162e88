"""Single-image super-resolution with RED-Net: degradation, colour, PSNR/SSIM, tiled restoration, evaluation and
training (`egbas train --model rednet`, `egbas sr`, `egbas sr-eval`).

Conventions (those of the SR literature: SRCNN, VDSR, RED-Net's own evaluation):
- Degradation: a high-resolution (HR) uint8 image, cropped at the bottom/right to a multiple of the scale s, is
  resized to 1/s of its size with PIL's bicubic filter (Image.BICUBIC: Keys' cubic, a = -0.5, antialiased when
  shrinking, like MATLAB's imresize), rounded to uint8 (the low-resolution image a user would have as a file),
  then resized back up by s with the same filter (uint8 again): the "bicubic" baseline and the network's input.
- Colour: the network sees only the luminance Y of YCbCr (ITU-R BT.601, studio range, as MATLAB's rgb2ycbcr:
  Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1], then / 255, so Y lies in [16/255, 235/255]).
  Cb and Cr are upscaled bicubically; a greyscale image is the Y of R = G = B; an alpha plane is upscaled
  bicubically.
- Metrics: PSNR and SSIM on Y in [0, 1] (peak 1), with `s` pixels cropped from every border. SSIM is Wang et al.
  2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, averaged over the pixels whose window lies inside
  the (cropped) image. The restored Y is clamped to [0, 1] and not rounded to 8 bits.
"""
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from . import photos as photo_data
from ._files import atomic_write, check_writable

SCALES = (2, 3, 4)
PATCH = 48              # HR training patch side (pixels)
BATCH = 16
STEPS_PER_EPOCH = 250   # one "epoch" of rednet training = this many steps of BATCH random patches
LR = 1e-3               # Adam
TILE = 256              # restoration works on tiles of at most TILE x TILE output pixels (+ the margin)


class SRError(ValueError):
    """Bad input to super-resolution (the message says what to fix)."""


# ---------------------------------------------------------------------------------------------------- colour
_RGB_TO_Y = np.array([65.481, 128.553, 24.966]) / 255
_RGB_TO_CB = np.array([-37.797, -74.203, 112.0]) / 255
_RGB_TO_CR = np.array([112.0, -93.786, -18.214]) / 255


def rgb_to_ycbcr(rgb):
    """float RGB (..., 3) in [0, 1] -> YCbCr (..., 3) in [0, 1] (BT.601 studio range, MATLAB rgb2ycbcr / 255)."""
    rgb = np.asarray(rgb, np.float64)
    offsets = np.array([16.0, 128.0, 128.0]) / 255
    return rgb @ np.stack([_RGB_TO_Y, _RGB_TO_CB, _RGB_TO_CR]).T + offsets


def ycbcr_to_rgb(ycbcr):
    """The inverse of rgb_to_ycbcr (no clamping)."""
    offsets = np.array([16.0, 128.0, 128.0]) / 255
    return (np.asarray(ycbcr, np.float64) - offsets) @ np.linalg.inv(np.stack([_RGB_TO_Y, _RGB_TO_CB, _RGB_TO_CR])).T


def luminance(pixels):
    """uint8 (H, W) greyscale or (H, W, 3) RGB -> Y (H, W) float64 in [0, 1] (BT.601 studio range)."""
    x = np.asarray(pixels, np.float64) / 255
    if x.ndim == 2:
        return (16 + 219 * x) / 255  # R = G = B: the three weights sum to 219
    return rgb_to_ycbcr(x)[..., 0]


# ----------------------------------------------------------------------------------------------- degradation
def bicubic(pixels, size):
    """uint8 (H, W) or (H, W, C) -> uint8 resized to size = (width, height) with PIL's bicubic filter."""
    from PIL import Image
    pixels = np.ascontiguousarray(pixels)
    planes = [pixels] if pixels.ndim == 2 else [pixels[..., c] for c in range(pixels.shape[2])]
    out = [np.asarray(Image.fromarray(p).resize(size, Image.BICUBIC)) for p in planes]
    return out[0] if pixels.ndim == 2 else np.stack(out, axis=-1)


def degrade(hr, scale):
    """HR uint8 image -> (hr cropped to a multiple of `scale`, lr uint8 1/scale the size, bicubic uint8 upscaled
    back to hr's size). See the module docstring."""
    scale = _check_scale(scale)
    h, w = hr.shape[:2]
    h, w = h - h % scale, w - w % scale
    if h < scale or w < scale:
        raise SRError(f"image {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    hr = hr[:h, :w]
    lr = bicubic(hr, (w // scale, h // scale))
    return hr, lr, bicubic(lr, (w, h))


def _check_scale(scale):
    if isinstance(scale, bool) or scale not in SCALES:
        raise SRError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
    return int(scale)


# --------------------------------------------------------------------------------------------------- metrics
def _cropped(a, b, border):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise SRError(f"compare two (H, W) images of the same size, got {a.shape} and {b.shape}")
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    if a.size == 0:
        raise SRError(f"nothing is left after cropping {border} border pixels")
    return a, b


def psnr(restored, reference, border=0):
    """Peak signal-to-noise ratio in dB of two (H, W) images in [0, 1] (peak 1), `border` pixels cropped."""
    a, b = _cropped(restored, reference, border)
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _gaussian_window(sigma=1.5, radius=5):
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x, g):
    """Separable correlation of x (H, W) with g (k,) in both directions, 'valid' part only (H-k+1, W-k+1)."""
    k = len(g)
    rows = sum(g[i] * x[i:x.shape[0] - k + 1 + i] for i in range(k))
    return sum(g[i] * rows[:, i:x.shape[1] - k + 1 + i] for i in range(k))


def ssim(restored, reference, border=0):
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004) of two (H, W) images in [0, 1], `border`
    pixels cropped: the mean of the SSIM map over the positions whose 11x11 Gaussian window (sigma 1.5) lies
    inside the image, with population (biased) variances, C1 = (0.01)^2, C2 = (0.03)^2."""
    a, b = _cropped(restored, reference, border)
    g = _gaussian_window()
    if min(a.shape) < len(g):
        raise SRError(f"SSIM needs images of at least {len(g)}x{len(g)} pixels after cropping, got {a.shape}")
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a ** 2
    var_b = _filter_valid(b * b, g) - mu_b ** 2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


# ------------------------------------------------------------------------------------------------ restoration
def receptive_radius(net):
    """Pixels of context each output pixel sees on each side: 1 per 3x3 layer (2 * depth layers)."""
    return 2 * net.depth


def run_network(net, y, tile=TILE):
    """Apply RED-Net `net` to one bicubic-upscaled image y (C, H, W) float32 in [0, 1] -> restored (C, H, W),
    clamped to [0, 1]. Images larger than `tile` are cut into tiles with a margin of the network's receptive
    radius, so the result equals the one-pass result (up to float rounding) at a bounded memory."""
    net_channels = net.encoder[0][0].in_channels
    if y.ndim != 3 or y.shape[0] != net_channels:
        raise SRError(f"the network takes ({net_channels}, H, W) images, got {tuple(y.shape)}")
    _, h, w = y.shape
    m = receptive_radius(net)
    out = torch.empty_like(y)
    with torch.no_grad():
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                t0, l0 = max(top - m, 0), max(left - m, 0)
                b1, r1 = min(top + tile, h), min(left + tile, w)
                piece = net(y[None, :, t0:min(b1 + m, h), l0:min(r1 + m, w)])[0]
                out[:, top:b1, left:r1] = piece[:, top - t0:top - t0 + b1 - top, left - l0:left - l0 + r1 - left]
    return out.clamp_(0, 1)


def restore_luminance(net, y_bicubic, tile=TILE):
    """Y (H, W) float in [0, 1] of a bicubic-upscaled image -> restored Y (H, W) float64 in [0, 1]."""
    y = torch.from_numpy(np.asarray(y_bicubic, np.float32))[None]
    return run_network(net, y, tile)[0].double().numpy()


def super_resolve(net, pixels, scale, alpha=None, tile=TILE):
    """A low-resolution uint8 image (H, W) or (H, W, 3) (+ optional uint8 alpha (H, W)) -> the image `scale` times
    larger, same layout, uint8: bicubic upscaling, then RED-Net restores the luminance."""
    scale = _check_scale(scale)
    h, w = pixels.shape[:2]
    size = (w * scale, h * scale)
    up = bicubic(pixels, size)
    if up.ndim == 2:
        y = restore_luminance(net, luminance(up), tile)
        out = (y * 255 - 16) / 219  # the inverse of luminance() for a grey image
    else:
        ycc = rgb_to_ycbcr(up / 255.0)
        ycc[..., 0] = restore_luminance(net, ycc[..., 0], tile)
        out = ycbcr_to_rgb(ycc)
    out = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
    return out, (None if alpha is None else bicubic(alpha, size))


def load_network(checkpoint):
    """The RED-Net of a checkpoint directory (egbas train --model rednet), or of zoo:2 / zoo:3 / zoo:4, and its
    scale."""
    if str(checkpoint).startswith("zoo:"):
        from . import zoo
        try:
            scale = int(str(checkpoint).split(":", 1)[1])
        except ValueError:
            raise SRError(f"{checkpoint!r}: write zoo:2, zoo:3 or zoo:4") from None
        return zoo.rednet(scale), scale
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} (train one with `egbas train --model rednet`)")
    config = ckpt.read_config(path)
    if config.get("model") != "rednet":
        raise SRError(f"{path} holds a {config.get('model')} model, not a rednet (train one with "
                      f"`egbas train --model rednet --data photos --scale 2`)")
    return ckpt.load(path), int(config["scale"])


def run_sr(checkpoint, image, out, tile=TILE):
    """`egbas sr`: read `image`, super-resolve it by the checkpoint's scale, write `out` (PNG unless the suffix
    says otherwise). Everything is checked before the network runs. Returns the output path."""
    from PIL import Image
    out = Path(out).expanduser()
    check_writable(out.parent)
    if out.suffix.lower() not in (".png", ".tif", ".tiff", ".bmp", ".webp"):
        raise SRError(f"--out {str(out)!r}: use a lossless image format (.png, .tif, .bmp, .webp)")
    net, scale = load_network(checkpoint)
    pixels, alpha = photo_data.read_image(image)
    big, big_alpha = super_resolve(net, pixels, scale, alpha, tile)
    if big_alpha is not None:
        big = np.dstack([big if big.ndim == 3 else big[..., None], big_alpha])
        picture = Image.fromarray(big, "RGBA" if big.shape[2] == 4 else "LA")
    else:
        picture = Image.fromarray(big)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: picture.save(tmp, format=Image.registered_extensions()[out.suffix.lower()]))
    return out


# ------------------------------------------------------------------------------------------------- evaluation
def evaluate(net, scale, split="held-out", photos=None, tile=TILE):
    """PSNR / SSIM (Y, border = scale) of RED-Net and of bicubic upscaling on the photos of `split`
    (photos.SPLITS), or on `photos` (a list of photos.Photo). Returns a list of dict rows, one per image, and a
    last row named 'mean'."""
    scale = _check_scale(scale)
    photos = photo_data.load(split) if photos is None else photos
    rows = []
    for photo in photos:
        hr, _, up = degrade(photo.pixels, scale)
        y_hr, y_up = luminance(hr), luminance(up)
        y_sr = restore_luminance(net, y_up, tile)
        rows.append({"image": photo.name, "height": hr.shape[0], "width": hr.shape[1],
                     "psnr_bicubic": psnr(y_up, y_hr, scale), "psnr_rednet": psnr(y_sr, y_hr, scale),
                     "ssim_bicubic": ssim(y_up, y_hr, scale), "ssim_rednet": ssim(y_sr, y_hr, scale)})
    keys = ("psnr_bicubic", "psnr_rednet", "ssim_bicubic", "ssim_rednet")
    rows.append({"image": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}})
    for r in rows:
        r["psnr_gain"] = r["psnr_rednet"] - r["psnr_bicubic"]
    return rows


def format_rows(rows, title):
    lines = [title, f"{'image':<16}{'bicubic dB':>11}{'rednet dB':>11}{'gain dB':>9}{'SSIM bic':>10}"
                    f"{'SSIM red':>10}"]
    for r in rows:
        lines.append(f"{r['image']:<16}{r['psnr_bicubic']:>11.2f}{r['psnr_rednet']:>11.2f}{r['psnr_gain']:>+9.2f}"
                     f"{r['ssim_bicubic']:>10.4f}{r['ssim_rednet']:>10.4f}")
    return "\n".join(lines)


def run_evaluation(checkpoints, splits=("held-out", "sporco", "skimage"), out=None):
    """`egbas sr-eval`: evaluate each checkpoint (or zoo:2 / zoo:3 / zoo:4) on each split; print the tables and
    write them to out/sr_eval.json (and .txt). Returns {checkpoint: {split: rows}}."""
    out = check_writable(out) if out is not None else None
    for split in splits:
        if split not in photo_data.SPLITS:
            raise SRError(f"unknown split {split!r}; choose from {', '.join(photo_data.SPLITS)}")
    nets = [(str(c), *load_network(c)) for c in checkpoints]
    data = {split: photo_data.load(split) for split in splits}  # missing packages fail before any evaluation
    results, text = {}, []
    for name, net, scale in nets:
        for split in splits:
            rows = evaluate(net, scale, photos=data[split])
            results.setdefault(name, {})[split] = rows
            text.append(format_rows(rows, f"{name} (x{scale}) on {split}:"))
            print(text[-1], flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "sr_eval.json", (json.dumps(results, indent=1) + "\n").encode())
        atomic_write(out / "sr_eval.txt", ("\n\n".join(text) + "\n").encode())
    return results


# --------------------------------------------------------------------------------------------------- training
class TrainingPairs:
    """Random (bicubic, HR) luminance patch pairs from a list of photos, for one scale. Every photo is degraded
    once (whole image, so patches see the same degradation as evaluation); a patch is a random PATCH x PATCH
    crop of a random photo (chosen in proportion to its area) under a random flip / 90-degree rotation."""

    def __init__(self, photos, scale, patch=PATCH):
        self.patch = patch
        self.pairs = []
        for photo in photos:
            hr, _, up = degrade(photo.pixels, scale)
            if min(hr.shape[:2]) < patch:
                continue
            self.pairs.append((torch.from_numpy(luminance(up).astype(np.float32)),
                               torch.from_numpy(luminance(hr).astype(np.float32))))
        if not self.pairs:
            raise SRError(f"no photo is at least {patch}x{patch} pixels")
        areas = torch.tensor([float(u.numel()) for u, _ in self.pairs], dtype=torch.float64)
        self.weights = areas / areas.sum()

    def batch(self, n, generator):
        """(inputs, targets), each (n, 1, patch, patch) float32."""
        p = self.patch
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        xs, ys = [], []
        for i in which.tolist():
            up, hr = self.pairs[i]
            top = int(torch.randint(0, up.shape[0] - p + 1, (1,), generator=generator))
            left = int(torch.randint(0, up.shape[1] - p + 1, (1,), generator=generator))
            k, flip = (int(v) for v in torch.randint(0, 4, (2,), generator=generator))
            pair = torch.stack([up[top:top + p, left:left + p], hr[top:top + p, left:left + p]])
            pair = torch.rot90(pair, k, dims=(1, 2))
            if flip % 2:
                pair = pair.flip(2)
            xs.append(pair[0])
            ys.append(pair[1])
        return torch.stack(xs)[:, None], torch.stack(ys)[:, None]


def quick_validation(net, pairs, crop=128):
    """Mean PSNR gain (dB) over bicubic on the centre crop of each (bicubic, HR) pair: a cheap per-epoch signal."""
    gains = []
    with torch.no_grad():
        for up, hr in pairs:
            h, w = up.shape
            t, l = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
            u, r = up[t:t + crop, l:l + crop], hr[t:t + crop, l:l + crop]
            sr = net(u[None, None])[0, 0].clamp(0, 1)
            gains.append(psnr(sr.double().numpy(), r.double().numpy(), 4) - psnr(u.double().numpy(),
                                                                                   r.double().numpy(), 4))
    return float(np.mean(gains))


def train_rednet(out, scale=2, epochs=8, seed=0, resume=False, progress=True, batch_size=None, lr=None,
                 width=None, depth=None, photos=None, steps_per_epoch=STEPS_PER_EPOCH, patch=PATCH,
                 data_name="photos"):
    """Train RED-Net on the `train` photos (or `photos`, a list of photos.Photo) for super-resolution by `scale`.

    One epoch = `steps_per_epoch` Adam steps on batches of `batch_size` random patches (MSE on Y). After every
    epoch: a checkpoint (weights + optimizer, atomic) and the held-out gain on centre crops of the held-out photos
    (history 'val_gain_db'). Seeded per (seed, epoch): a resumed run gives the same weights as an uninterrupted
    one. resume=True continues `out` with its own settings. Returns `out`."""
    from tqdm.auto import tqdm
    from .rednet import build_restorer
    from .train import TrainingError, _epoch_seed, _one_thread, write_loss_plot

    scale = _check_scale(scale)
    batch_size = BATCH if batch_size is None else batch_size
    lr = LR if lr is None else lr
    out = check_writable(out)
    state = None
    if (out / ckpt.WEIGHTS).exists():
        if not resume:
            raise TrainingError(f"{out} already holds a checkpoint: pass resume=True (--resume) to continue it, "
                                f"or choose another out directory")
        state = ckpt.read_checkpoint(out)
        saved = state["config"]
        if saved["model"] != "rednet" or saved.get("training", {}).get("data") != data_name:
            raise TrainingError(f"{out} holds a {saved['model']} trained on {saved.get('training', {}).get('data')}"
                                f", not rednet on {data_name}: choose another out directory")
        if state["epoch"] >= epochs:
            return out
        t = saved["training"]
        seed, batch_size, steps_per_epoch, patch = t["seed"], t["batch_size"], t["steps_per_epoch"], t["patch"]
        scale = saved["scale"]
    train_photos = photo_data.load("train") if photos is None else photos
    val_photos = photo_data.load("held-out") if photos is None else photos[:2]
    pairs = TrainingPairs(train_photos, scale, patch)
    val_pairs = TrainingPairs(val_photos, scale, min(patch, 16)).pairs

    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if state is None:
            bundle = build_restorer(channels=1, depth=depth, width=width, scale=scale)
            epoch, history = 0, {}
        else:
            bundle = build_restorer(**{k: state["config"][k] for k in ("channels", "depth", "width", "scale")})
            bundle.load_state_dict(state["model_state"])
            epoch, history = state["epoch"], state["history"]
        optimizer = torch.optim.Adam(bundle.parameters(), lr)
        if state is not None:
            optimizer.load_state_dict(state["optimizers"]["main"])
        training = {"data": data_name, "seed": seed, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
                    "patch": patch, "lr": optimizer.param_groups[0]["lr"], "n_images": len(pairs.pairs),
                    "loss": "mse on Y", "seconds": history.get("seconds", [0.0])[-1] if history else 0.0}
        net = bundle.rednet
        while epoch < epochs:
            epoch += 1
            started = time.time()
            g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
            bundle.train()
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=True)
            for _ in bar:
                x, y = pairs.batch(batch_size, g)
                loss = torch.nn.functional.mse_loss(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.setdefault("mse", []).append(round(loss.item(), 7))
                bar.set_postfix(psnr=f"{-10 * math.log10(max(loss.item(), 1e-12)):.2f}")
            bar.close()
            bundle.eval()
            gain = quick_validation(net, val_pairs)
            history.setdefault("val_gain_db", []).append(round(gain, 4))
            seconds = (history.get("seconds") or [0.0])[-1] + time.time() - started
            history.setdefault("seconds", []).append(round(seconds, 1))
            if progress:
                print(f"epoch {epoch}: held-out crops {gain:+.2f} dB over bicubic ({seconds / 60:.1f} min so far)")
            ckpt.save_checkpoint(out, bundle, epoch=epoch, optimizers={"main": optimizer}, history=history,
                                 training={**training, "seconds": seconds})
    write_loss_plot({"mse": history["mse"]}, out / "losses.png")
    return out


# ------------------------------------------------------------------------------------------------ explanation
EXPLORE_CROP = 48  # side of the (upscaled) image region explored: the region lives in a 48*48 = 2,304-dim space


class DisplayedRestorer(torch.nn.Module):
    """A RED-Net for the explorer and its report: the same layers (under `rednet.`), the output clamped to [0, 1]
    and mapped to [-1, 1], the range the report draws as an image. The clamp comes after every layer, so the
    regions of the layers are RED-Net's own."""

    def __init__(self, net, query_shape):
        super().__init__()
        self.rednet = net
        self.egbas_config = {**net.egbas_config, "input_shape": list(query_shape), "output_shape": list(query_shape),
                             "input_bounds": [0.0, 1.0]}  # the region lives in pixel space: inputs stay images

    def forward(self, x):
        return self.rednet(x.reshape(x.shape[0], *self.egbas_config["input_shape"])).clamp(0, 1) * 2 - 1


def explore_query(pixels, scale, crop=EXPLORE_CROP):
    """The query of a rednet exploration: the Y (1, crop, crop) float32 of the bicubic upscaling of the centre of
    the low-resolution image `pixels` (smaller images are used whole)."""
    h, w = pixels.shape[:2]
    side_h, side_w = min(h, -(-crop // scale)), min(w, -(-crop // scale))
    top, left = (h - side_h) // 2, (w - side_w) // 2
    up = bicubic(pixels[top:top + side_h, left:left + side_w], (side_w * scale, side_h * scale))
    y = np.clip(luminance(up)[:crop, :crop], 0.0, 1.0)  # bicubic overshoots a little: a valid image again
    return torch.from_numpy(y.astype(np.float32))[None]


def run_explore_rednet(checkpoint, layer, image, out, keep=0.05, n=500, seed=0, progress=True):
    """`egbas explore --checkpoint <rednet> --layer L --image FILE`: the region of layer L (a name of the RED-Net:
    encoder.2, decoder.1, ...) around the bicubic-upscaled centre of FILE, in input space; the report shows the
    restored outputs of the tree's nodes. Returns the report directory."""
    from .exploration import explore
    from .layers import get_layer
    from .selection import select_boundaries
    out = check_writable(out)
    net, scale = load_network(checkpoint)
    get_layer(net, layer)  # unknown layer -> the list of the network's layers
    query = explore_query(photo_data.read_image(image)[0], scale)
    model = DisplayedRestorer(net, tuple(query.shape)).eval()
    selection = select_boundaries(model, f"rednet.{layer}", query, keep=keep, seed=seed)
    result = explore(selection.region(), n=n, seed=seed, progress=progress)
    print(f"explored {layer}: {len(selection.units)} essential boundaries, {result.accepted} nodes")
    return result.save(out, selection=selection, name=f"rednet x{scale} from {checkpoint}, layer {layer}, "
                                                       f"around {Path(image).name}")
