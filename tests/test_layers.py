import pytest
import torch
from torch import nn

from egbas_fast.layers import evaluating, get_layer, layer_output, masked_forward
from tests.toys import TOYS, reference_values


class Counter(nn.Module):
    """Identity that counts its calls: proves a later layer was (not) run."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def _no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("toy", TOYS, ids=lambda t: t.name)
def test_layer_output_equals_manual_forward(toy):
    model = toy.build()
    x = torch.randn(33, *toy.query_shape, generator=torch.Generator().manual_seed(0))
    for layer in toy.layers:
        got = layer_output(model, layer, x)
        want = reference_values(toy.name, model, layer, x)
        assert got.shape == want.shape == (33, want.shape[1])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert _no_hooks(model)


def test_inplace_relu_after_layer_does_not_change_value():
    model = next(t for t in TOYS if t.name == "inplace_relu").build()
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    got = layer_output(model, "0", x)
    assert (got < 0).any()  # the ReLU(inplace=True) after layer '0' would have zeroed these
    torch.testing.assert_close(got, x @ model[0].weight.T + model[0].bias)


def test_forward_stops_after_layer():
    model = nn.Sequential(nn.Linear(3, 4), Counter(), nn.ReLU(), Counter())
    layer_output(model, "1", torch.randn(5, 3))
    assert (model[1].calls, model[3].calls) == (1, 0)
    layer_output(model, "3", torch.randn(5, 3))
    assert (model[1].calls, model[3].calls) == (2, 1)
    assert _no_hooks(model)


def test_nested_names_resolve():
    model = next(t for t in TOYS if t.name == "nested").build()
    assert get_layer(model, "blocks.body.1") is model.blocks["body"][1]
    assert get_layer(model, "blocks.head") is model.blocks["head"]


def test_unknown_layer_lists_close_names():
    model = next(t for t in TOYS if t.name == "nested").build()
    with pytest.raises(ValueError, match=r"unknown layer 'blocks\.bdy\.1'.*'blocks\.body\.1'"):
        get_layer(model, "blocks.bdy.1")
    with pytest.raises(ValueError, match="unknown layer"):
        layer_output(model, "nope", torch.randn(2, 5))
    with pytest.raises(TypeError, match="dotted module name"):
        get_layer(model, 3)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        get_layer(lambda z: z, "0")


def test_layer_that_never_runs_is_a_clear_error_and_hooks_are_removed():
    model = next(t for t in TOYS if t.name == "nested").build()
    with pytest.raises(RuntimeError, match="'unused' never ran"):
        layer_output(model, "unused", torch.randn(2, 5))
    with pytest.raises(RuntimeError, match="never ran"):
        masked_forward(model, "unused", torch.randn(2, 5), torch.ones(10))
    assert _no_hooks(model)


def test_hooks_removed_when_the_model_raises():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with pytest.raises(RuntimeError):
        layer_output(model, "1", torch.randn(2, 7))  # wrong input width: Linear raises before the hook
    assert _no_hooks(model)


def test_eval_mode_for_the_query_and_flags_restored():
    model = next(t for t in TOYS if t.name == "batchnorm").build()  # training mode; BN train fails on batch 1
    model[3].eval()  # mixed flags must come back exactly
    flags = [m.training for m in model.modules()]
    got = layer_output(model, "1", torch.ones(1, 4))
    torch.testing.assert_close(got, reference_values("batchnorm", model, "1", torch.ones(1, 4)))
    assert [m.training for m in model.modules()] == flags
    with evaluating(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == flags


def test_no_grad_and_tuple_output_rejected():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    assert not layer_output(model, "0", torch.randn(2, 3)).requires_grad

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match="single tensor"):
        layer_output(nn.Sequential(Pair()), "0", torch.randn(2, 3))


def test_masked_forward():
    model = next(t for t in TOYS if t.name == "conv").build()
    z = torch.randn(3, 6, 1, 1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(z)
        torch.testing.assert_close(masked_forward(model, "main.2", z, torch.ones(8 * 16)), full, rtol=0, atol=0)
        mask = (torch.arange(8 * 16) % 3 == 0).float()
        h = reference_values("conv", model, "main.2", z) * mask  # (3, 128) masked layer value
        m = model.main
        want = m[7](m[6](m[5](m[4](m[3](h.view(3, 8, 4, 4))))))  # the rest of the network by hand
        torch.testing.assert_close(masked_forward(model, "main.2", z, mask), want)
        per_sample = torch.stack([mask, torch.ones_like(mask), mask])  # (B, units) masks
        torch.testing.assert_close(masked_forward(model, "main.2", z, per_sample)[1], full[1])
    assert _no_hooks(model)
    mask = torch.ones(8 * 16, requires_grad=True)
    (g,) = torch.autograd.grad(masked_forward(model, "main.2", z, mask).sum(), [mask])
    assert g.shape == (128,) and g.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
