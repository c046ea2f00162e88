"""Tiny hand-built models shared by the tests (region, selection, explorer). Weights are seeded and never touch the
global RNG. `TOYS` lists every generator with its layers and query shape: `build()` gives a fresh model.
"""
from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _seeded(model, seed):
    """Fill every parameter (and BatchNorm running stats) from a private generator: reproducible, non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5 if p.dim() > 1
                    else 0.3 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def linear_relu(d=3, n=5, seed=0):
    """z (B, d) -> relu(W z + b): the region of a query is the polytope {z : sign(W z + b) = sign(W q + b)}."""
    return _seeded(nn.Sequential(nn.Linear(d, n), nn.ReLU()), seed)


def leaky_generator(d=4, n=16, out=6, seed=1):
    return _seeded(nn.Sequential(nn.Linear(d, n), nn.LeakyReLU(0.2), nn.Linear(n, n), nn.LeakyReLU(0.2),
                                 nn.Linear(n, out)), seed)


def batchnorm_generator(d=4, n=12, out=5, seed=2):
    """Returned in TRAINING mode on purpose: a region must run it in eval mode (train mode fails on batch 1)."""
    return _seeded(nn.Sequential(nn.Linear(d, n), nn.BatchNorm1d(n), nn.ReLU(), nn.Linear(n, out)), seed).train()


class Nested(nn.Module):
    """A Sequential inside a ModuleDict inside a custom class: layers 'blocks.body.0', 'blocks.body.3'..."""

    def __init__(self, d=5, n=10, out=4):
        super().__init__()
        self.blocks = nn.ModuleDict({
            "body": nn.Sequential(nn.Linear(d, n), nn.ReLU(), nn.Linear(n, n), nn.ReLU()),
            "head": nn.Linear(n, out),
        })
        self.unused = nn.Linear(d, n)  # never called by forward: asking for it must fail clearly

    def forward(self, z):
        return self.blocks["head"](self.blocks["body"](z))


def nested(seed=3):
    return _seeded(Nested(), seed)


def inplace_relu_generator(d=4, n=9, out=3, seed=4):
    """Layer '0' (a Linear) is followed by ReLU(inplace=True), which would overwrite its value if read late."""
    return _seeded(nn.Sequential(nn.Linear(d, n), nn.ReLU(inplace=True), nn.Linear(n, n), nn.ReLU(inplace=True),
                                 nn.Linear(n, out)), seed)


class ConvGenerator(nn.Module):
    """A 16x16 DCGAN (pytorch/examples layout): latent (B, d, 1, 1) -> (B, 1, 16, 16)."""

    def __init__(self, d=6, ngf=4):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(d, ngf * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh(),  # 16x16
        )

    def forward(self, z):
        return self.main(z)


def conv_generator(seed=5):
    return _seeded(ConvGenerator(), seed).eval()


class TinyClassifier(nn.Module):
    """Image (B, 1, 8, 8) -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def tiny_classifier(seed=6):
    return _seeded(TinyClassifier(), seed)


PLANTED_UNITS = (3, 17, 29)


def planted(d=6, n=40, out=8, units=PLANTED_UNITS, seed=7):
    """z (B, d) -> Linear(d, n) -> ReLU -> Linear(n, out) where only `units` reach the output.

    The planted units have bias +3 (on near the origin) and large outgoing weights; every other unit has an
    outgoing weight of exactly 0, so masking it changes nothing: selection must find exactly `units`.
    """
    model = _seeded(nn.Sequential(nn.Linear(d, n), nn.ReLU(), nn.Linear(n, out)), seed)
    with torch.no_grad():
        keep = torch.zeros(n, dtype=torch.bool)
        keep[list(units)] = True
        model[0].bias[keep] = 3.0
        model[2].weight[:, ~keep] = 0.0
        model[2].weight[:, keep] *= 4.0
    return model


Toy = namedtuple("Toy", "name build layers query_shape")

# Every generator-like toy: (name, factory, layers worth testing, query shape without the batch dim).
TOYS = [
    Toy("linear_relu", linear_relu, ["0", "1"], (3,)),
    Toy("leaky", leaky_generator, ["1", "2", "3"], (4,)),
    Toy("batchnorm", batchnorm_generator, ["1", "2"], (4,)),
    Toy("nested", nested, ["blocks.body.0", "blocks.body.1", "blocks.body.3"], (5,)),
    Toy("inplace_relu", inplace_relu_generator, ["0", "1", "2"], (4,)),
    Toy("conv", conv_generator, ["main.1", "main.2", "main.5"], (6, 1, 1)),
    Toy("classifier", tiny_classifier, ["features.0", "features.2", "classifier.2"], (1, 8, 8)),
]


# ---- independent oracle: each toy's layer values by a plain functional forward (no hooks, no egbas_fast) -------
def _bn(x, m):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)


def reference_values(name, model, layer, x):
    """Value of `layer` of toy `name` for the batch x, flattened (B, units), computed by hand in eval mode."""
    with torch.no_grad():
        if name in ("linear_relu", "leaky", "inplace_relu", "batchnorm"):
            seq, h, acts = model, x, {}
            for i, m in enumerate(seq):
                if isinstance(m, nn.Linear):
                    h = F.linear(h, m.weight, m.bias)
                elif isinstance(m, nn.ReLU):
                    h = F.relu(h)  # never in place here
                elif isinstance(m, nn.LeakyReLU):
                    h = F.leaky_relu(h, m.negative_slope)
                elif isinstance(m, nn.BatchNorm1d):
                    h = _bn(h, m)
                acts[str(i)] = h
            out = acts[layer]
        elif name == "nested":
            body = model.blocks["body"]
            h0 = F.linear(x, body[0].weight, body[0].bias)
            h1 = F.relu(h0)
            h2 = F.linear(h1, body[2].weight, body[2].bias)
            out = {"blocks.body.0": h0, "blocks.body.1": h1, "blocks.body.2": h2, "blocks.body.3": F.relu(h2)}[layer]
        elif name == "conv":
            mm, acts, h = model.main, {}, x
            for i in range(len(mm)):
                m = mm[i]
                if isinstance(m, nn.ConvTranspose2d):
                    h = F.conv_transpose2d(h, m.weight, None, m.stride, m.padding)
                elif isinstance(m, nn.BatchNorm2d):
                    h = _bn(h, m)
                elif isinstance(m, nn.ReLU):
                    h = F.relu(h)
                else:
                    h = torch.tanh(h)
                acts[f"main.{i}"] = h
            out = acts[layer]
        elif name == "classifier":
            f, c = model.features, model.classifier
            a0 = F.conv2d(x, f[0].weight, f[0].bias, padding=1)
            a2 = F.max_pool2d(F.relu(a0), 2)
            a5 = F.linear(a2.flatten(1), c[1].weight, c[1].bias)
            out = {"features.0": a0, "features.1": F.relu(a0), "features.2": a2, "classifier.1": a5,
                   "classifier.2": F.relu(a5)}[layer]
        else:
            raise KeyError(name)
    return out.reshape(out.shape[0], -1)


def oracle_inside(name, query_shape, model, region, Z):
    """Plain-torch membership of the latents Z in `region` (a GenerativeRegion of toy `name`): (n,) bool. Uses only
    `reference_values` and the region's query, layer, units and threshold."""
    x = torch.tensor(np.asarray(Z, np.float32)).reshape(len(Z), *query_shape)
    q = torch.tensor(region.query).reshape(1, *query_shape)
    units = region.units.copy()
    on = reference_values(name, model, region.layer, x)[:, units] > region.threshold  # (n, k)
    on_q = reference_values(name, model, region.layer, q)[:, units] > region.threshold  # (1, k)
    return (on == on_q).all(1).numpy()


def polytope_exit(W, b, query, directions):
    """First t > 0 at which a unit of sign(W (query + t u) + b) flips, per row u of `directions` (inf if none): the
    exact boundary distance of a Linear + ReLU region. W (n, d), b (n,), directions (k, d) -> (k,) float64."""
    a = W @ np.asarray(query, np.float64) + b  # (n,) pre-activations at the query
    rate = np.asarray(directions, np.float64) @ W.T  # (k, n): d/dt of each pre-activation along each ray
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -a[None, :] / rate  # where each unit crosses 0
    t[~(t > 0)] = np.inf
    return t.min(axis=1)


class FailsOnSomeQueries(nn.Module):
    """Linear -> ReLU -> Linear whose full forward of ONE latent with z[0] < -1 raises: a region or a boundary
    selection (both run the query alone through the model) fails for those queries, while batches (exploration)
    always work. A sweep must record those rows as failed and go on."""

    def __init__(self, d=4, n=12, out=5):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, n), nn.ReLU())
        self.head = nn.Linear(n, out)

    def forward(self, z):
        h = self.body(z)
        if z.shape[0] == 1 and float(z[0, 0]) < -1.0:
            raise ValueError("planted failure for this query")
        return self.head(h)


def fails_on_some_queries(seed=5):
    return _seeded(FailsOnSomeQueries(), seed)
