"""A real image -> the latent a generator takes: GAN inversion by optimisation (`invert`) and the encoders of the
vae / ae bundles (`encode`).

`invert` minimises, over the latent z of the generator G and for the target image x,

    mean((G(z) - x)^2)  +  prior_weight * (|z|^2 / d - 1)^2

with Adam (learning rate decayed on a cosine to 1% of its start). The second term keeps z in the typical set of the
N(0, I) prior, the shell |z| ~ sqrt(d) where every latent the generator was trained on lies: without it the
optimum can drift to latents the generator never saw, whose region says nothing about the model as it is sampled.
Inversion is not convex, so `restarts` latents drawn from the prior are optimised together (one batched forward)
for the first `steps // 4` steps; the best one continues alone. The generator runs in eval mode (BatchNorm uses
its running statistics) and only the latent gets gradients (`torch.autograd.grad` with respect to z: no weight
gradient is ever computed).
"""
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import core
from ._checks import finite_real, positive_int
from ._checks import seed as check_seed
from .layers import evaluating, model_device, model_dtype

DEFAULT_STEPS = 600
DEFAULT_RESTARTS = 8
DEFAULT_LR = 0.1
PRIOR_WEIGHT = 1e-3
SCREENED = 8  # prior draws screened (one forward each, no gradient) per restart kept
WARMUP_SHARE = 4  # all restarts run for steps // WARMUP_SHARE steps, then the best continues alone


@dataclass
class Inversion:
    """A real image and the latent that reproduces it.

    latent: np.ndarray float32 in the generator's input shape (ready for GenerativeRegion as the query);
    output: the generator's output at `latent` (a CPU tensor, one sample without the batch dim); target: the image
    as the generator's output range and size (the same form); psnr: of output vs target, peak = the range's width
    (dB; for a [-1, 1] generator this is the PSNR of the [0, 1] pictures); losses: the loss per step of the kept
    restart (empty for an encoder); method: "inversion" or "encoder"; seconds: wall time.
    """

    latent: np.ndarray
    output: torch.Tensor
    target: torch.Tensor
    psnr: float
    value_range: tuple
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    method: str = "inversion"
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def __repr__(self):
        return (f"Inversion(method={self.method!r}, latent shape={self.latent.shape}, psnr={self.psnr:.2f} dB, "
                f"seconds={self.seconds:.1f})")


# ----------------------------------------------------------------------------------------------------- shapes
def _config(model):
    return getattr(model, "egbas_config", None) or {}


def latent_shape_of(generator, latent_shape=None):
    """The per-sample input shape of `generator`: `latent_shape` if given, else its egbas_config's input_shape."""
    if latent_shape is None:
        latent_shape = _config(generator).get("input_shape")
        if not latent_shape:
            raise ValueError("the generator does not say its latent shape (no egbas_config['input_shape']): pass "
                             "latent_shape=, e.g. latent_shape=(100,) or (100, 1, 1)")
    shape = tuple(int(s) for s in np.atleast_1d(latent_shape))
    if not shape or min(shape) <= 0:
        raise ValueError(f"latent_shape must hold positive sizes, got {latent_shape}")
    return shape


def output_range(model, value_range=None):
    """(lo, hi) of the model's images: `value_range` if given, else read from its last activation (Tanh ->
    (-1, 1), Sigmoid -> (0, 1)); every egbas_fast model works in [-1, 1]. None when it cannot be known."""
    if value_range is not None:
        lo, hi = (finite_real(v, "value_range") for v in value_range)
        if not lo < hi:
            raise ValueError(f"value_range must be (lo, hi) with lo < hi, got {value_range}")
        return lo, hi
    if _config(model).get("model") is not None:
        return -1.0, 1.0
    leaves = [m for m in model.modules() if not list(m.children())]
    if leaves and isinstance(leaves[-1], nn.Tanh):
        return -1.0, 1.0
    if leaves and isinstance(leaves[-1], nn.Sigmoid):
        return 0.0, 1.0
    return None


# ----------------------------------------------------------------------------------------------------- images
def load_image(image, shape, value_range):
    """A real image -> float32 tensor `shape` (C, H, W) in `value_range`.

    image: a tensor / array (C, H, W) already in that range and size ((H, W) for one channel), or a file path /
    PIL image, which is converted to grey (C = 1) or RGB (C = 3), centre-cropped to a square and resized.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"images must be (C, H, W) with C 1 or 3 to be read from a file; this model takes {shape}")
    if isinstance(image, (str, Path)) or _is_pil(image):
        if value_range is None:
            raise ValueError("the model's output range is unknown (its last module is neither Tanh nor Sigmoid): "
                             "pass value_range=(lo, hi) to convert an image file")
        pixels = _read_picture(image, shape)  # (C, H, W) in [0, 1]
        lo, hi = value_range
        return torch.from_numpy(lo + (hi - lo) * pixels)
    x = image.detach().cpu() if isinstance(image, torch.Tensor) else np.asarray(image)
    if isinstance(x, np.ndarray):
        if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"image must hold real numbers, got dtype {x.dtype}")
        x = torch.from_numpy(np.array(x, dtype=np.float32))
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"image must hold real numbers, got a {x.dtype} tensor")
    x = x.to(torch.float32)
    if x.ndim == 2 and shape[0] == 1:
        x = x[None]
    if tuple(x.shape) != shape:
        raise ValueError(f"image must have shape {shape} (C, H, W) like the model's images, got {tuple(x.shape)}; "
                         f"pass a file path or PIL image to have it converted")
    if not torch.isfinite(x).all():
        raise ValueError("image contains NaN or inf")
    if value_range is not None:
        lo, hi = value_range
        slack = 1e-3 * (hi - lo)
        if x.min() < lo - slack or x.max() > hi + slack:
            raise ValueError(f"image values span [{float(x.min()):.4g}, {float(x.max()):.4g}], outside the model's "
                             f"range [{lo:g}, {hi:g}]: scale it (uint8 pixels p -> {lo:g} + {hi - lo:g} * p / 255)")
    return x.contiguous()


def _is_pil(image):
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(image, Image.Image)


def _read_picture(image, shape):
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    if _is_pil(image):
        picture = image
    else:
        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {str(path)!r}")
        try:
            with Image.open(path) as im:
                im.load()
                picture = im.copy()
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read {str(path)!r} as an image: {e}") from None
    picture = picture.convert("L" if c == 1 else "RGB")
    pw, ph = picture.size
    side_w, side_h = (pw, pw * h / w) if pw * h <= ph * w else (ph * w / h, ph)  # crop to the model's aspect
    box = ((pw - side_w) / 2, (ph - side_h) / 2, (pw + side_w) / 2, (ph + side_h) / 2)
    pixels = np.asarray(picture.resize((w, h), Image.BILINEAR, box=box), dtype=np.float32) / 255.0
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1).copy()  # (C, H, W)


def psnr(output, target, value_range):
    """Peak signal-to-noise ratio in dB, peak = the width of `value_range`."""
    mse = float(torch.mean((output.to(torch.float64) - target.to(torch.float64)) ** 2))
    peak = value_range[1] - value_range[0]
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


# ------------------------------------------------------------------------------------------------------ invert
def invert(generator, image, *, steps=DEFAULT_STEPS, restarts=DEFAULT_RESTARTS, lr=DEFAULT_LR,
           prior_weight=PRIOR_WEIGHT, seed=0, latent_shape=None, value_range=None, progress=True):
    """The latent whose output best reproduces `image`: an `Inversion` (see the module docstring for the loss).

    generator: latent batch (B, *latent_shape) -> images (B, C, H, W); image: a tensor / array (C, H, W) in the
    generator's output range, or a file path / PIL image (converted to that range and size); steps: Adam steps
    in all; restarts: prior draws optimised together for the first steps // 4 steps (seed picks them:
    `core.random_normal`, the same stream as every query latent); prior_weight: of the typical-set term.
    Cost: steps // 4 forward+backward passes at batch `restarts`, then 3/4 steps at batch 1.
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"generator must be a torch.nn.Module, got {type(generator).__name__}")
    steps = positive_int(steps, "steps")
    restarts = positive_int(restarts, "restarts")
    lr = finite_real(lr, "lr")
    prior_weight = finite_real(prior_weight, "prior_weight")
    if lr <= 0 or prior_weight < 0:
        raise ValueError(f"lr must be > 0 and prior_weight >= 0, got lr={lr}, prior_weight={prior_weight}")
    seed = check_seed(seed)
    shape = latent_shape_of(generator, latent_shape)
    d = int(np.prod(shape))
    value_range = output_range(generator, value_range)
    device, dtype = model_device(generator), model_dtype(generator)
    out_shape = _config(generator).get("output_shape")
    if out_shape is None:  # one forward of the prior mean tells the image shape
        with torch.no_grad(), evaluating(generator):
            out_shape = generator(torch.zeros((1, *shape), device=device, dtype=dtype)).shape[1:]
    target = load_image(image, out_shape, value_range)  # before any optimisation: bad input fails at once
    if value_range is None:
        value_range = (float(target.min()), float(target.max()) if target.max() > target.min() else 1.0)

    t0 = time.perf_counter()
    x = target.to(device, torch.float32)[None]  # (1, C, H, W)
    z = _screened_starts(generator, x, shape, dtype, restarts, seed)  # (R, d) float32
    warmup = max(1, steps // WARMUP_SHARE) if restarts > 1 else 0
    losses = np.zeros((restarts, steps), np.float32)
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, disable=not progress, desc="invert", unit="step", leave=False)
    with evaluating(generator):
        z = z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for t in range(steps):
            if t == warmup and restarts > 1:  # keep the best restart, with its Adam moments
                best = int(np.argmin(losses[:, t - 1]))
                losses = losses[best:best + 1]
                moments = {k: (v[best:best + 1].clone() if v.dim() else v) for k, v in opt.state[z].items()}
                z = z.detach()[best:best + 1].clone().requires_grad_(True)
                opt = torch.optim.Adam([z], lr=lr)
                opt.state[z] = moments
            opt.param_groups[0]["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t / steps)))  # cosine decay
            out = generator(z.to(dtype).view(len(z), *shape)).to(torch.float32)  # (r, C, H, W)
            per_sample = (out - x).flatten(1).pow(2).mean(1) + prior_weight * (z.pow(2).mean(1) - 1).pow(2)
            (grad,) = torch.autograd.grad(per_sample.sum(), z)
            z.grad = grad
            opt.step()
            losses[:, t] = per_sample.detach().cpu().numpy()
            bar.update(1)
        bar.close()
        with torch.no_grad():
            z = z.detach()[:1]
            output = generator(z.to(dtype).view(1, *shape)).to(torch.float32).cpu()[0]
    return Inversion(latent=z.cpu().numpy().reshape(shape).astype(np.float32), output=output, target=target,
                     psnr=psnr(output, target, value_range), value_range=tuple(value_range), losses=losses[0],
                     method="inversion", seconds=time.perf_counter() - t0,
                     settings={"steps": steps, "restarts": restarts, "lr": lr, "prior_weight": prior_weight,
                               "seed": seed})


def _screened_starts(generator, x, shape, dtype, restarts, seed):
    """The `restarts` best of SCREENED * restarts prior draws by their output's distance to x (forwards only)."""
    d = int(np.prod(shape))
    z = torch.from_numpy(core.random_normal(SCREENED * restarts, d, seed)).to(x.device)  # prior draws
    if restarts == 1 or SCREENED == 1:
        return z[:restarts]
    with torch.no_grad():
        err = torch.cat([(generator(c.to(dtype).view(len(c), *shape)).to(torch.float32) - x).flatten(1).pow(2).mean(1)
                         for c in z.split(64)])
    return z[torch.argsort(err, stable=True)[:restarts]]


# ------------------------------------------------------------------------------------------------------ encode
LATENT_MAP_STEPS = 200  # Adam steps refining the second stage's u (an MLP on d ~ 6 numbers: a few ms each)


def encode(model, image):
    """The latent the explored generator of a vae / ae bundle takes for `image`: np.ndarray float32 (d,).

    ae: the encoder's code. vae: the encoder's mean mu is the first stage's code z; the generator explored is
    decoder(latent_map(u)) (models.VAEGenerator), so the latent returned is the u that latent_map sends to mu:
    the second stage's encoder mean, refined by Adam on |latent_map(u) - mu|^2 (the amortised encoder is only
    approximately the map's inverse). image: as for `invert`, in [-1, 1] (or a file / PIL image).
    """
    return _encode(model, image)[0]


def _encode(model, image):
    """(latent (d,), generator, target image) for a vae / ae bundle."""
    from . import models

    if not isinstance(model, (models.VAE, models.AutoEncoder)):
        hint = ""
        if isinstance(model, (models.VAEGenerator, models.DCGANGenerator)):
            hint = ": this is only the generator; load the whole bundle with eg.load(path, part='all')"
        raise TypeError(f"encode needs a vae or ae bundle (models.VAE / models.AutoEncoder), got "
                        f"{type(model).__name__}{hint}; invert a GAN generator with eg.invert")
    config = _config(model)
    target = load_image(image, config["image_shape"], (-1.0, 1.0))
    device = model_device(model)
    with torch.no_grad(), evaluating(model):
        code = model.encoder(target[None].to(device))  # (1, d) or (1, 2d)
    if isinstance(model, models.AutoEncoder):
        return code[0].cpu().numpy().astype(np.float32), model.decoder, target
    mu = code.chunk(2, dim=1)[0]  # (1, d) the first stage's code
    generator = model.generator
    with evaluating(model):
        with torch.no_grad():
            u = model.latent_encoder(mu).chunk(2, dim=1)[0]  # (1, d) amortised start
        u = u.clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=0.05)
        best, best_loss = u.detach().clone(), float("inf")
        for _ in range(LATENT_MAP_STEPS + 1):
            loss = (generator.latent_map(u) - mu).pow(2).sum()
            if float(loss.detach()) < best_loss:  # Adam is not monotone: keep the best u seen (the start included)
                best, best_loss = u.detach().clone(), float(loss.detach())
            (grad,) = torch.autograd.grad(loss, u)
            u.grad = grad
            opt.step()
    return best[0].cpu().numpy().astype(np.float32), generator, target


def encode_image(model, image):
    """`encode` as an `Inversion` (latent, the generator's output there, the target, PSNR): what reports show."""
    t0 = time.perf_counter()
    latent, generator, target = _encode(model, image)
    with torch.no_grad(), evaluating(generator):
        output = generator(torch.from_numpy(latent)[None].to(model_device(generator))).to(torch.float32).cpu()[0]
    return Inversion(latent=latent, output=output, target=target, psnr=psnr(output, target, (-1.0, 1.0)),
                     value_range=(-1.0, 1.0), method="encoder", seconds=time.perf_counter() - t0,
                     settings={"latent_map_steps": LATENT_MAP_STEPS if hasattr(generator, "latent_map") else 0})
