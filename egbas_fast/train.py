"""Training for every model kind: `train(...)` here, `egbas train ...` on the command line.

GANs use the seeds' objective: the discriminator scores real images as 1 and generated ones as 0 with sigmoid
cross-entropy on logits, the generator minimises the non-saturating loss -log D(G(z)); Adam with beta1 = 0.5.
VAE: negative ELBO; AE: reconstruction; classifier: cross-entropy. A checkpoint is written atomically after every
epoch; `resume=True` continues from it. Every epoch reseeds torch from (seed, epoch), so a resumed run gives the
same weights as an uninterrupted one.
"""
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import checkpoint as ckpt
from ._files import atomic_write, check_writable
from . import data as datasets
from . import models
from .layers import one_thread as _one_thread  # also used by sr.py and the training tests

_LR = {"gan": 5e-4, "dcgan": 4e-4, "vae": 1e-3, "ae": 1e-3, "classifier": 1e-3}
# Small batches for the generative models: a 5-epoch run on 5,000 images needs thousands of updates, not hundreds
# (dcgan on mnist5k, 5 epochs: batch 64 -> 20% confidently classified samples, 16 -> 40-48%, 8 -> 50-56%;
# gan: batch 32 -> 0% (collapsed), 8 with lr 5e-4 -> 32%).
_BATCH = {"gan": 8, "dcgan": 8, "vae": 8, "ae": 32, "classifier": 64}
N_SAMPLES = 64  # images in samples.png (8 x 8)
EPOCH_RECORDS = ("val_accuracy", "latent_nll")  # history entries recorded once per epoch, not per step


class TrainingError(ValueError):
    """Training cannot start with these settings (the message says which one to change)."""


def optimizers_for(bundle, lr=None):
    """{name: Adam}: 'd' and 'g' for GANs (beta1 = 0.5, as in DCGAN); 'main' (the first stage) and 'latent' (the
    second stage, lr 1e-3) for the VAE; 'main' otherwise."""
    lr = _LR[bundle.egbas_config["model"]] if lr is None else lr
    if isinstance(bundle, models.GAN):
        return {"d": torch.optim.Adam(bundle.discriminator.parameters(), lr, betas=(0.5, 0.999)),
                "g": torch.optim.Adam(bundle.generator.parameters(), lr, betas=(0.5, 0.999))}
    if isinstance(bundle, models.VAE):
        return {"main": torch.optim.Adam(bundle.first_stage_parameters(), lr),
                "latent": torch.optim.Adam(bundle.second_stage_parameters(), 1e-3)}
    return {"main": torch.optim.Adam(bundle.parameters(), lr)}


def step(bundle, optimizers, x, y=None):
    """One optimisation step on the batch x (B, C, H, W) in [-1, 1] (labels y for the classifier).
    Returns the losses as floats."""
    if isinstance(bundle, models.GAN):
        g, d, opt_g, opt_d = bundle.generator, bundle.discriminator, optimizers["g"], optimizers["d"]
        fake = g(torch.randn(x.shape[0], g.latent_dim))
        real_logits, fake_logits = d(x), d(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        fake_logits = d(fake)  # the updated D scores the same fakes; non-saturating: G wants them called real
        loss_g = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return {"d": loss_d.item(), "g": loss_g.item()}
    if isinstance(bundle, models.VAE):
        name, loss = "neg_elbo", bundle.loss(x)
    elif isinstance(bundle, models.AutoEncoder):
        name, loss = "mse", F.mse_loss(bundle(x), x)
    else:
        name, loss = "ce", F.cross_entropy(bundle(x), y)
    optimizers["main"].zero_grad(set_to_none=True)
    loss.backward()
    optimizers["main"].step()
    return {name: loss.item()}


def _epoch_seed(seed, epoch):
    return (seed * 1_000_003 + epoch) % (2 ** 63)


def _default_out(model, data):
    return Path("runs") / f"{model}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(data)).strip('_')}"


def train(model="dcgan", data="mnist5k", epochs=5, out=None, seed=0, resume=False, progress=True,
          batch_size=None, lr=None, latent_dim=None, width=None, image_size=None, limit=None, extra_layers=None,
          **rednet):
    """Train `model` (models.KINDS) on `data` (a data.SOURCES name, or a data.Images / uint8 (N, C, H, W) array)
    for `epochs` epochs in total; returns the checkpoint directory (default runs/<model>-<data>).

    Writes out/model.safetensors + config.json after every epoch, out/samples.png (and samples/epoch_NNN.png) for
    generative models, out/losses.png at the end. resume=True continues an existing checkpoint up to `epochs`
    (and returns at once if it is already there) with the checkpoint's own settings (seed, batch size, lr, sizes,
    image_size, limit); without it an existing checkpoint is an error, not overwritten.
    batch_size, lr, latent_dim, width, extra_layers: None = the kind's default (models.build). Only full batches
    are used (batch_size is capped at the data size).
    model="rednet" (super-resolution) trains on data="photos" with sr.train_rednet; **rednet passes its own
    settings (scale, depth, steps_per_epoch).
    """
    if model not in models.KINDS + ("rednet",):
        raise KeyError(f"unknown model {model!r}; choose one of {', '.join(models.KINDS)}, rednet")
    if model == "rednet" or (isinstance(data, str) and data == "photos"):
        ignored = [k for k, v in (("latent_dim", latent_dim), ("image_size", image_size), ("limit", limit),
                                  ("extra_layers", extra_layers)) if v is not None]
        if ignored:
            raise TrainingError(f"rednet does not take {', '.join(ignored)}")
        return _train_rednet(model, data, epochs, out, seed, resume, progress, batch_size, lr, width, **rednet)
    if rednet:
        raise TrainingError(f"{', '.join(sorted(rednet))} only apply to --model rednet")
    batch_size = _BATCH[model] if batch_size is None else batch_size
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if int(value) != value or value <= 0:
            raise TrainingError(f"{name} must be a positive integer, got {value}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise TrainingError(f"lr must be a positive number, got {lr}")
    data_name = data if isinstance(data, str) else "array"
    out = check_writable(Path(out) if out is not None else _default_out(model, data_name))  # before any work
    existing = (out / ckpt.WEIGHTS).exists()
    if existing and not resume:
        raise TrainingError(f"{out} already holds a checkpoint: pass resume=True (--resume) to continue it, "
                            f"or choose another out directory")
    state = ckpt.read_checkpoint(out) if existing else None
    if state is not None:
        saved = state["config"]
        if saved["model"] != model or saved.get("training", {}).get("data") != data_name:
            raise TrainingError(f"{out} holds a {saved['model']} trained on {saved.get('training', {}).get('data')}"
                                f", not {model} on {data_name}: choose another out directory")
        if state["epoch"] >= epochs:
            return out
        settings = saved["training"]  # a resumed run must see the same data in the same order
        seed, batch_size, image_size, limit = (settings[k] for k in ("seed", "batch_size", "image_size", "limit"))

    if isinstance(data, str):
        images, labels = datasets.load(data, image_size=image_size, limit=limit)
    elif isinstance(data, tuple):  # data.Images or (images, labels)
        images, labels = data
    else:
        images, labels = data, None
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) < 2:
        raise TrainingError(f"data must be uint8 images (N >= 2, C, H, W), got {images.dtype} {images.shape}")
    if model == "classifier" and labels is None:
        raise TrainingError(f"the classifier needs labelled data; {data_name} has no labels")

    with _one_thread(), torch.random.fork_rng(devices=[]):  # fork_rng: leave the caller's global RNG as it was
        torch.manual_seed(seed)
        if state is None:
            bundle = models.build(model, images.shape[1:], latent_dim, width,
                                  n_classes=int(labels.max()) + 1 if labels is not None else 10,
                                  extra_layers=extra_layers)
            bundle.apply(models.init_weights)
            epoch, history = 0, {}
        else:
            bundle = models.from_config(state["config"])
            bundle.load_state_dict(state["model_state"])
            epoch, history = state["epoch"], state["history"]
        optimizers = optimizers_for(bundle, lr)
        for name, opt_state in (state or {}).get("optimizers", {}).items():
            optimizers[name].load_state_dict(opt_state)
        training = {"data": data_name, "seed": seed, "batch_size": batch_size, "image_size": image_size,
                    "limit": limit, "lr": optimizers[next(iter(optimizers))].param_groups[0]["lr"],
                    "n_images": len(images)}
        _fit(bundle, optimizers, images, labels, epoch, epochs, history, training, out, seed, progress)
    return out


def _train_rednet(model, data, epochs, out, seed, resume, progress, batch_size, lr, width, **rednet):
    from . import sr
    if model != "rednet" or data != "photos":
        raise TrainingError(f"rednet trains on the photos data only (and photos are for rednet only), got "
                            f"--model {model} --data {data}")
    unknown = set(rednet) - {"scale", "depth", "steps_per_epoch", "photos"}
    if unknown:
        raise TypeError(f"train() got unexpected arguments {', '.join(sorted(unknown))}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size or 1)):
        if int(value) != value or value <= 0:
            raise TrainingError(f"{name} must be a positive integer, got {value}")
    scale = rednet.pop("scale", None) or 2
    out = Path(out) if out is not None else _default_out(model, f"{data}-x{scale}")
    return sr.train_rednet(out, scale=scale, epochs=epochs, seed=seed, resume=resume, progress=progress,
                           batch_size=batch_size, lr=lr, width=width, **rednet)


def _fit(bundle, optimizers, images, labels, epoch, epochs, history, training, out, seed, progress):
    from tqdm.auto import tqdm
    kind = bundle.egbas_config["model"]
    x_all = datasets.as_float(images)  # (N, C, H, W) in [-1, 1]
    y_all = torch.from_numpy(labels) if labels is not None else None
    train_idx = torch.arange(len(x_all))
    if kind == "classifier":  # a fixed random tenth is held out to report accuracy
        order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = order[: len(order) // 10], order[len(order) // 10:]
    batch = min(training["batch_size"], len(train_idx))
    fixed = _fixed_inputs(bundle, x_all, seed)

    while epoch < epochs:
        epoch += 1
        torch.manual_seed(_epoch_seed(seed, epoch))
        bundle.train()
        perm = train_idx[torch.randperm(len(train_idx))]
        bar = tqdm(range(len(perm) // batch), desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=True)
        for b in bar:
            idx = perm[b * batch:(b + 1) * batch]
            losses = step(bundle, optimizers, x_all[idx], None if y_all is None else y_all[idx])
            for name, value in losses.items():
                history.setdefault(name, []).append(round(value, 5))
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
        bar.close()
        bundle.eval()
        if kind == "classifier":
            with torch.no_grad():
                accuracy = (bundle(x_all[val_idx]).argmax(1) == y_all[val_idx]).float().mean().item()
            history.setdefault("val_accuracy", []).append(round(accuracy, 5))
            if progress:
                print(f"epoch {epoch}: held-out accuracy {accuracy:.4f}")
        else:
            if isinstance(bundle, models.VAE):
                history.setdefault("latent_nll", []).append(fit_latent_stage(bundle, optimizers["latent"], x_all))
            if isinstance(bundle, (models.GAN, models.VAE)):
                prior_batchnorm_stats(getattr(bundle, bundle.explorable), seed=_epoch_seed(seed, epoch))
            _write_samples(bundle, fixed, out, epoch)
        ckpt.save_checkpoint(out, bundle, epoch=epoch, optimizers=optimizers, history=history, training=training)
    write_loss_plot(history, out / "losses.png")


LATENT_PASSES, LATENT_BATCH = 50, 64


def fit_latent_stage(vae, optimizer, x_all, passes=LATENT_PASSES, batch=LATENT_BATCH):
    """Fit the VAE's second stage to the codes the (frozen) encoder gives x_all: `passes` passes of minibatches
    z = mu + sigma * eps over them (warm-started every epoch from the last fit). Returns the mean loss of the last
    pass. 50 passes over mnist5k's codes (3,950 steps) take ~8 s per epoch; fitted so after every epoch, the
    5-epoch mnist5k VAE gave 79% confidently recognised digits, one fit of 20,000 steps after training 80%, no
    second stage 63%."""
    with torch.no_grad():
        mu, logvar = torch.cat([vae.encoder(x_all[i:i + 500]) for i in range(0, len(x_all), 500)]).chunk(2, dim=1)
    steps_per_pass = -(-len(mu) // batch)
    losses = []
    for _ in range(passes * steps_per_pass):
        idx = torch.randint(0, len(mu), (batch,))
        loss = vae.latent_loss(models.reparameterise(mu[idx], logvar[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return round(float(np.mean(losses[-steps_per_pass:])), 5)


def prior_batchnorm_stats(generator, seed=0, n=5000, batch=250):
    """Set the BatchNorm running statistics of `generator` to their exact averages over n latents z ~ N(0, I),
    the distribution it is sampled from. Training leaves in them a moving average over the last few small batches
    of training inputs, which for the VAE decoder are posterior samples z ~ q(z|x), not prior ones: sampling the
    mnist5k VAE from the prior with those statistics gave 42% confidently classified digits, with these 50%.
    Only the buffers change (training normalises with batch statistics), so the training run is unaffected."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    g = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.train()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    with torch.no_grad():
        for _ in range(-(-n // batch)):
            generator(torch.randn(batch, generator.egbas_config["latent_dim"], generator=g))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.train(was_training)


def _fixed_inputs(bundle, x_all, seed):
    """What samples.png shows every epoch: decodings of fixed latents, or for the AE reconstructions of fixed
    images. Drawn from their own generator so they do not depend on the epoch."""
    g = torch.Generator().manual_seed(seed + 12345)
    if isinstance(bundle, models.AutoEncoder):
        return x_all[torch.randperm(len(x_all), generator=g)[: N_SAMPLES // 2]]
    if isinstance(bundle, models.Classifier):
        return None
    return torch.randn(N_SAMPLES, bundle.egbas_config["latent_dim"], generator=g)


def _write_samples(bundle, fixed, out, epoch):
    with torch.no_grad():
        if isinstance(bundle, models.AutoEncoder):
            shown = torch.cat([fixed, bundle(fixed)])  # top half originals, bottom half reconstructions
        else:
            shown = getattr(bundle, bundle.explorable)(fixed)
    grid = image_grid(datasets.as_uint8(shown))
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    save_png(grid, out / "samples.png")
    save_png(grid, out / "samples" / f"epoch_{epoch:03d}.png")


def image_grid(images, nrow=8, pad=2):
    """uint8 (N, C, H, W) -> one uint8 (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) tile image, pad pixels black."""
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = \
            img.transpose(1, 2, 0)
    return grid


def save_png(array, path):
    """uint8 (H, W, C) with C in {1, 3} -> PNG, atomically."""
    from PIL import Image
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG"))


def write_loss_plot(history, path):
    """losses.png: every per-step loss curve of the history (moving average over 20 steps on top)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    curves = {k: np.asarray(v) for k, v in history.items() if k not in EPOCH_RECORDS and len(v)}
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        line, = ax.plot(values, alpha=0.3, lw=0.8)
        k = min(20, len(values))
        ax.plot(np.arange(k - 1, len(values)), np.convolve(values, np.ones(k) / k, "valid"), color=line.get_color(),
                label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
