"""Essential boundaries: the few units of a layer that carry the query's output (E-GBAS, Bernoulli-mask relaxation).

Every unit i of the layer gets a keep-probability theta_i = sigmoid(alpha_i). Each step samples a relaxed keep-mask
m ~ Bernoulli(theta), multiplies the layer's output by it, runs the rest of the network, and minimises

    ||G_m(z0) - G(z0)||^2 / ||G(z0)||^2  +  sparsity * mean(theta)

with Adam over alpha. The mask is the binary-concrete (Gumbel-sigmoid) relaxation of Bernoulli(theta),
m = sigmoid((alpha + logistic noise) / temperature): a low-variance reparameterised gradient (REINFORCE over 10^4
units is hopeless). Not straight-through: a hard 0 in the forward pass puts the next ReLU at its kink, so a dropped
pre-activation unit (a Linear/Conv/BatchNorm output feeding a ReLU) gets zero gradient and can never come back
(measured: the planted toy lost 2 of its 3 units at the Linear, none at the ReLU). With m in (0, 1),
relu(m * v) = m * relu(v), so naming the activation or the layer before it gives the identical selection, as it
gives the identical region. `fidelity` is measured with the hard 0/1 mask of the kept units. The noise comes from
a seeded torch.Generator: same seed, same result.
"""
import math

import numpy as np
import torch

from .layers import evaluating, masked_forward
from ._checks import finite_real, positive_int, positive_real
from ._checks import seed as check_seed
from .region import GenerativeRegion


class Selection:
    """Result of `select_boundaries`.

    units: essential unit indices (int64), most important first; theta: keep-probability of every unit
    (float32, n_units); fidelity: ||G_kept(z0) - G(z0)|| / ||G(z0)|| with only `units` kept at the layer
    (0 = the output is unchanged); losses: the training loss per step (float32).
    region() -> the GenerativeRegion of the query bounded by `units` only.
    """

    def __init__(self, full_region, units, theta, fidelity, losses):
        self._full_region = full_region  # the query's region with every unit: validated, query forward done
        self.layer = full_region.layer
        self.units, self.theta, self.fidelity, self.losses = units, theta, fidelity, losses

    def region(self):
        """The generative region of the query bounded by the essential units only."""
        return self._full_region.restrict(self.units)

    def __repr__(self):
        return (f"Selection(layer={self.layer!r}, units={self.units.size}/{self.theta.size}, "
                f"fidelity={self.fidelity:.4g})")


PRICE_GROWTH = 2 ** (1 / 15)


def _relative_error(output, reference):
    """||output - reference|| / ||reference|| per sample: (B,)."""
    diff = (output - reference).flatten(1).pow(2).sum(1)
    return (diff / reference.flatten(1).pow(2).sum(1).clamp_min(1e-30)).sqrt()


def select_boundaries(model, layer, query, keep=None, sparsity=1.0, steps=200, lr=0.2, temperature=0.5,
                      samples=1, init=0.95, seed=0, threshold=0.0, batch_size=512):
    """Find the essential boundaries of `query`'s region at `layer`: a `Selection`.

    keep: None keeps the units whose optimised theta > 0.5 (at least one); a fraction in (0, 1] keeps the top
    ceil(keep * n_units) units by theta (keep=0.05: the top 5%); if more than that many are still on after `steps`,
    up to `steps` more steps raise the penalty until only that many are. sparsity: weight of mean(theta) in the
    loss (larger: fewer units survive; 1.0 leaves ~5% of the face DCGAN's first two ReLU layers). steps, lr: Adam
    iterations and step size on the logits alpha. temperature: of the relaxation used for gradients. samples:
    masks drawn per step (one batch). init: starting keep-probability. seed: of the mask noise. threshold,
    batch_size: of the regions built from the result. Any model whose output is one tensor works: a generator
    (query = a latent, the image is preserved) or a classifier (query = an image, the logits are preserved).
    Cost: one forward + backward of the whole model per step at batch `samples`.
    """
    if keep is not None:
        keep = finite_real(keep, "keep")
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be a fraction in (0, 1] (e.g. 0.05 for the top 5%) or None, got {keep}")
    sparsity = finite_real(sparsity, "sparsity")
    if sparsity < 0:
        raise ValueError(f"sparsity must be >= 0, got {sparsity}")
    steps = positive_int(steps, "steps")
    samples = positive_int(samples, "samples")
    lr, temperature = positive_real(lr, "lr"), positive_real(temperature, "temperature")
    if not 0 < finite_real(init, "init") < 1:
        raise ValueError(f"init must be a probability in (0, 1), got {init}")
    seed = check_seed(seed)
    region = GenerativeRegion(model, layer, query, threshold=threshold, batch_size=batch_size)  # validates the rest

    n = region.n_units
    count = None if keep is None else max(1, math.ceil(keep * n - 1e-9))  # keep=0.05 of 8192 units -> 410
    x0 = region._to_model(torch.tensor(region.query)[None])  # (1, *query.shape)
    xs = x0.expand(samples, *x0.shape[1:])  # (S, *query.shape): S masks per step in one batch
    generator = torch.Generator().manual_seed(int(seed))
    alpha = torch.full((n,), math.log(init / (1 - init)), device=region.device, requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=lr)
    losses = []
    with evaluating(model):
        with torch.no_grad():
            reference = model(x0)  # (1, ...)
        if not isinstance(reference, torch.Tensor):
            raise TypeError(f"the model returns {type(reference).__name__}; selection needs a single output tensor")
        scale = reference.flatten(1).pow(2).sum().clamp_min(1e-30)

        def step(weight):
            u = torch.rand((samples, n), generator=generator).clamp_(1e-6, 1 - 1e-6).to(region.device)
            logits = alpha + (u.log() - (-u).log1p())  # (S, n): alpha + logistic noise
            mask = torch.sigmoid(logits / temperature)  # (S, n) relaxed Bernoulli(theta) sample, in (0, 1)
            output = masked_forward(model, layer, xs, mask)  # (S, ...)
            error = (output - reference).flatten(1).pow(2).sum(1).mean() / scale
            loss = error + weight * torch.sigmoid(alpha).mean()
            (alpha.grad,) = torch.autograd.grad(loss, [alpha])  # alpha only: the model's .grad stays untouched
            optimizer.step()
            losses.append(float(loss.detach()))

        for _ in range(steps):
            step(sparsity)
        # keep asks for fewer units than the penalty left on: raise the price of density (x2 per 15 steps) until
        # only `count` units are on, so the top `count` are the survivors of a run that ended at that size, not an
        # arbitrary cut through units the run never separated (face DCGAN, keep=1%: fidelity 0.37 instead of 0.55).
        # (Lowering the price for a larger keep does not help: pruned units do not come back within `steps`.)
        weight = max(sparsity, 1e-3)
        for _ in range(steps if count is not None else 0):
            if int((alpha > 0).sum()) <= count:
                break
            weight *= PRICE_GROWTH
            step(weight)

    alpha = alpha.detach().cpu()
    theta = torch.sigmoid(alpha).numpy().astype(np.float32)
    order = np.argsort(-alpha.numpy(), kind="stable")  # by theta (logits do not saturate), ties by index
    units = order[:count if count is not None else max(1, int((alpha > 0).sum()))].astype(np.int64)
    fidelity = boundary_fidelity(model, layer, region, units, reference)
    return Selection(region, units, theta, fidelity, np.array(losses, np.float32))


def boundary_fidelity(model, layer, region, units, reference=None):
    """||G_kept(z0) - G(z0)|| / ||G(z0)||: the query's output with only `units` kept (others zeroed) at `layer`."""
    x0 = region._to_model(torch.tensor(region.query)[None])
    kept = torch.zeros(region.n_units, device=region.device)
    kept[torch.as_tensor(units, device=region.device)] = 1
    with torch.no_grad(), evaluating(model):
        reference = model(x0) if reference is None else reference
        return float(_relative_error(masked_forward(model, layer, x0, kept), reference)[0])
