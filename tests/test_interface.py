"""Any model a user brings: conditional / keyword-only forwards, tuple/dict outputs, half precision, noisy forwards,
functional activations. Each either works (membership checked against a plain torch forward) or is refused with
one clear error before any selection or exploration."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import egbas_fast as eg
from egbas_fast import core
from egbas_fast.interface import ModelInterfaceError, adapt

pytestmark = pytest.mark.usefixtures("one_torch_thread")
D = 4


class Conditional(nn.Module):
    """z (B, 4) and a class label (B,) -> relu(W z + E[label]) -> Linear."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(5, 12)
        self.fc = nn.Linear(D, 12)
        self.act = nn.ReLU()
        self.out = nn.Linear(12, 6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def hidden(self, z, label):
        return self.fc(z) + self.embed(label)

    def forward(self, z, label):
        return self.out(self.act(self.hidden(z, label)))


class KeywordOnly(Conditional):
    def forward(self, *, latent, label):
        return super().forward(latent, label)


class TupleOut(Conditional):
    def forward(self, z):
        image = super().forward(z, torch.zeros(len(z), dtype=torch.long))
        return image, image.sum(1)


class DictOut(TupleOut):
    def forward(self, z):
        image, score = super().forward(z)
        return {"score": score, "image": image}


class Noisy(Conditional):
    """StyleGAN-style noise injection: fresh noise added to the hidden layer at every call."""

    def forward(self, z):
        h = self.hidden(z, torch.zeros(len(z), dtype=torch.long))
        return self.out(self.act(h + 0.1 * torch.randn_like(h)))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, z):
        return self.out(F.relu(self.fc(z)))


def _latents(n=64, seed=0):
    return np.array(core.random_normal(n, D, seed))  # writable: torch.from_numpy warns on read-only arrays


def _oracle_inside(model, label, region, Z):
    """Membership by a plain forward of the conditional model's hidden layer (no hooks, no egbas_fast)."""
    with torch.no_grad():
        labels = torch.full((len(Z),), label, dtype=torch.long)
        units = torch.tensor(region.units)
        on = model.hidden(torch.tensor(Z), labels)[:, units] > 0
        on_q = model.hidden(torch.tensor(region.query)[None], labels[:1])[:, units] > 0
    return (on == on_q).all(1).numpy()


def test_conditional_generator_with_fixed_extra_inputs():
    model = Conditional()
    with pytest.raises(ValueError, match="adapt"):  # bare: the forward needs a label
        eg.GenerativeRegion(model, "act", np.zeros(D, np.float32))
    for label in (1, 3):
        region = eg.GenerativeRegion(adapt(model, args=(torch.tensor([label]),)), "act", _latents(1, 9)[0])
        Z = region.query + 0.7 * _latents()
        np.testing.assert_array_equal(region.contains(Z), _oracle_inside(model, label, region, Z))


def test_keyword_only_forward_through_a_callable():
    model = KeywordOnly()
    label = torch.tensor([2])
    region = eg.GenerativeRegion(adapt(model, forward=lambda m, z: m(latent=z, label=label.expand(len(z)))),
                                 "act", _latents(1, 9)[0])
    Z = region.query + 0.7 * _latents()
    np.testing.assert_array_equal(region.contains(Z), _oracle_inside(model, 2, region, Z))


@pytest.mark.parametrize("model, output", [(TupleOut(), 0), (DictOut(), "image")])
def test_tuple_and_dict_outputs_refused_at_once_then_selected(model, output, tmp_path):
    query = _latents(1, 9)[0]
    with pytest.raises(ModelInterfaceError, match=f"output={'0' if output == 0 else repr('KEY')}"):
        eg.select_boundaries(model, "act", query, keep=0.5, steps=5)  # refused before any selection step
    adapted = adapt(model, output=output)
    sel = eg.select_boundaries(adapted, "act", query, keep=0.5, steps=5)
    res = eg.explore(sel.region(), n=12, progress=False)
    res.save(tmp_path / "r", selection=sel)  # the original failure came only here, after exploring
    assert (tmp_path / "r" / "report.html").exists()
    with torch.no_grad():
        expected = TupleOut.forward(model, torch.from_numpy(res.latents[:3]))[0]
    torch.testing.assert_close(sel.region().generate(res.latents[:3]), expected)


def test_bad_output_selector_is_clear():
    with pytest.raises(ModelInterfaceError, match="does not select"):
        eg.GenerativeRegion(adapt(TupleOut(), output=5), "act", np.zeros(D, np.float32))


def test_noisy_forward_is_refused_before_any_work():
    model = Noisy()
    steps = []
    model.out.register_forward_hook(lambda *a: steps.append(1))
    with pytest.raises(ModelInterfaceError, match="not deterministic.*register_buffer"):
        eg.select_boundaries(model, "act", _latents(1, 9)[0], keep=0.5, steps=50)
    assert len(steps) <= 2  # the check's own two forwards, no selection step


def test_functional_activation_names_the_fix():
    with pytest.raises(ValueError, match=r"called functionally.*F\.relu.*name the module that feeds it"):
        eg.GenerativeRegion(Functional(), "relu", np.zeros(D, np.float32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_work_end_to_end(dtype, tmp_path):
    model = Conditional()
    half = adapt(model.to(dtype), args=(torch.tensor([1]),))
    query = _latents(1, 9)[0]
    sel = eg.select_boundaries(half, "act", query, keep=0.5, steps=10)
    res = eg.explore(sel.region(), n=16, progress=False)
    assert res.latents.dtype == np.float32 and len(res.latents) == 16
    # membership was decided in the model's dtype: recheck with a plain forward of that dtype
    with torch.no_grad():
        x = torch.from_numpy(res.latents).to(dtype)
        labels = torch.ones(len(x), dtype=torch.long)
        on = model.hidden(x, labels)[:, sel.units].float() > 0
    assert bool((on == on[:1]).all())
    res.save(tmp_path / "r", selection=sel)
    assert (tmp_path / "r" / "egbas.png").stat().st_size > 0
