"""`egbas demo` and `egbas explore`: the whole pipeline, query -> essential boundaries -> tree -> report.

Both raise ValueError / FileNotFoundError with a message that says what to fix; the CLI prints it as one line.
Every argument is checked (and the output directory probed) before any loading, selection or exploration.
"""
from pathlib import Path

import numpy as np

from . import report
from ._checks import finite_real, positive_int, seed as check_seed

DEMO_KEEP = 0.05  # share of the layer's units kept as essential boundaries
DEMO_NODES = 500
# The default MNIST generator ships inside the package, so the demo trains nothing: the generator of the checkpoint
# that `egbas train --model dcgan --data mnist5k --epochs 6 --seed 0` writes (the exact commands, and the judge's
# score of its samples, are in TRAINED_WITH.md beside the weights).
MNIST_WEIGHTS = Path(__file__).parent / "weights" / "mnist-dcgan"


def mnist_dcgan():
    """The demo's MNIST DCGAN generator (latent (B, 32) -> digits (B, 1, 28, 28) in [-1, 1]), from the package."""
    from . import checkpoint

    return checkpoint.load(MNIST_WEIGHTS)


def relu_layers(model):
    """Dotted names of the model's ReLU-like activations, in forward order (registration order)."""
    import torch.nn as nn

    kinds = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)
    return [name for name, module in model.named_modules() if isinstance(module, kinds)]


def middle_layer(model):
    layers = relu_layers(model)
    if not layers:
        raise ValueError("the model has no ReLU-like layer to explore: pass a layer name explicitly")
    return layers[len(layers) // 2]


def query_latent(model, query_seed, latent_shape=None):
    """Latent number `query_seed` of the prior N(0, I), in the model's input shape (or `latent_shape`)."""
    from . import core
    from .inversion import latent_shape_of

    shape = latent_shape_of(model, latent_shape)
    return core.random_normal(1, int(np.prod(shape)), int(query_seed))[0].reshape(shape)


def explore_model(model, layer, out, keep=DEMO_KEEP, n=DEMO_NODES, query_seed=0, seed=0, name=None,
                  progress=True, source=None):
    """query -> select_boundaries(keep) -> explore(n) -> report in `out`. Returns the report directory.
    source: a `queries.QuerySource` (default: the prior draw number `query_seed`)."""
    from .exploration import explore
    from .queries import prior_query
    from .selection import select_boundaries

    source = prior_query(model, query_seed) if source is None else source
    selection = select_boundaries(model, layer, source.query, keep=keep, seed=seed)
    result = explore(selection.region(), n=n, seed=seed, progress=progress)  # a classifier's stays in its pixels' box
    print(f"explored {layer}: {len(selection.units)} essential boundaries, {result.accepted} nodes in "
          f"{result.seconds:.1f} s ({result.acceptance:.0%} of proposals accepted); writing the report")
    source.settings.update({"layer": layer, "keep": keep, "units": int(len(selection.units)),
                            "layer_units": int(selection.theta.size), "fidelity": float(selection.fidelity),
                            "nodes": n, "seed": seed})
    return result.save(out, selection=selection, name=name, source=source)


def run_demo(out="egbas-demo", model="mnist"):
    """`egbas demo`: explore the embedded default generator at a middle ReLU layer and write the report."""
    if model not in ("mnist", "faces"):
        raise ValueError(f"unknown demo model {model!r}: choose 'mnist' or 'faces'")
    out = report.check_writable(out)  # before training: a bad --out fails at once
    if model == "faces":
        from . import zoo

        generator, name = zoo.face_dcgan(), "face DCGAN (gan-face-generate weights, DigiFace-1M)"
    else:
        generator, name = mnist_dcgan(), "DCGAN trained on mnist5k"
    path = explore_model(generator, middle_layer(generator), out, name=name)
    print(f"report: {path / 'report.html'}")
    return path


def run_explore(checkpoint, layer, keep=DEMO_KEEP, n=DEMO_NODES, query_seed=None, seed=0, out=None, image=None,
                data=None, index=None, progress=True):
    """`egbas explore`: explore `layer` of a trained checkpoint (directory from `egbas train`) around a prior draw
    (query_seed, default 0) or a real image (image: a file; data + index: an image of a data set), which is
    inverted (gan, dcgan), encoded (vae, ae) or, for a classifier, the query itself."""
    from . import checkpoint as ckpt
    from .layers import get_layer
    from .queries import check_query_args, image_query

    if out is None:
        raise ValueError("an output directory is required (--out DIR)")
    if not 0 < finite_real(keep, "keep") <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    positive_int(n, "n")
    check_query_args(image, data, index, query_seed)
    if query_seed is not None:
        check_seed(query_seed)
    check_seed(seed)
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} (train one with `egbas train`)")
    if image is not None and not Path(image).expanduser().is_file():
        raise FileNotFoundError(f"no image file at {str(image)!r}")
    out = report.check_writable(out)
    if ckpt.read_config(path).get("model") == "rednet":  # image restoration: the region lives in input space
        from .sr import run_explore_rednet
        if image is None:
            raise ValueError("a rednet explains an image: pass --image FILE")
        result = run_explore_rednet(path, layer, image, out, keep, n, seed, progress)
        print(f"report: {result / 'report.html'}")
        return result
    model = ckpt.load(path)
    get_layer(model, layer)  # unknown layer -> ValueError listing the model's layers
    kind = model.egbas_config.get("model", "model")
    if image is None and data is None:
        if kind == "classifier":
            raise ValueError("a classifier explains an image: pass --image FILE or --data NAME --index I")
        source = None
    else:
        source = image_query(path, model.egbas_config, image=image, data=data, index=index, seed=seed,
                             progress=progress)
        if source.inversion is not None:
            print(f"query: {source.description} -> {source.inversion.method}, PSNR {source.inversion.psnr:.1f} dB")
    result = explore_model(model, layer, out, keep=keep, n=n, query_seed=query_seed or 0, seed=seed,
                           name=f"{kind} from {path}", progress=progress, source=source)
    print(f"report: {result / 'report.html'}")
    return result


def run_layers(checkpoint):
    """`egbas layers`: the table of the checkpoint's layers (name, module, output shape, units), in forward order."""
    import torch

    from . import checkpoint as ckpt
    from .interface import format_layers, list_layers

    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} (train one with `egbas train`)")
    model = ckpt.load(path)
    example = torch.zeros(1, *model.egbas_config["input_shape"])  # the prior's mean (or a grey image)
    return format_layers(list_layers(model, example))
