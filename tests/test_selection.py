import numpy as np
import pytest
import torch

from egbas_fast.region import GenerativeRegion
from egbas_fast.selection import Selection, select_boundaries
from tests.toys import PLANTED_UNITS, TOYS, planted, tiny_classifier

QUERY = np.zeros(6, np.float32)


def _strongest_planted():
    """The planted toy with unit 17's outgoing weights x4: the unit that matters most."""
    model = planted()
    with torch.no_grad():
        model[2].weight[:, 17] *= 4
    return model


def test_recovers_planted_units():
    model = planted()
    sel = select_boundaries(model, "1", QUERY)
    assert isinstance(sel, Selection)
    assert sorted(sel.units.tolist()) == sorted(PLANTED_UNITS)  # keep=None: exactly the units that feed the output
    assert sel.fidelity < 1e-6  # every other unit has zero outgoing weight: the output is unchanged
    assert sel.theta.dtype == np.float32 and sel.theta.shape == (40,)
    assert sel.units.dtype == np.int64
    assert (sel.theta[list(PLANTED_UNITS)] > 0.5).all() and (np.delete(sel.theta, PLANTED_UNITS) < 0.5).all()
    top = select_boundaries(model, "0", QUERY, keep=3 / 40)  # the Linear before the ReLU: the same units
    assert sorted(top.units.tolist()) == sorted(PLANTED_UNITS)


def test_units_ordered_by_theta_and_keep_prunes_to_the_strongest():
    sel = select_boundaries(_strongest_planted(), "1", QUERY, keep=1 / 40)
    assert sel.units.tolist() == [17]
    assert sel.fidelity > 0.05  # two planted units dropped: the output does change
    full = select_boundaries(_strongest_planted(), "1", QUERY, keep=1.0)
    assert full.units.size == 40 and np.all(np.diff(full.theta[full.units]) <= 0)
    assert full.fidelity == 0.0  # a mask of ones changes nothing, bit for bit


def test_activation_and_the_layer_before_it_give_the_same_selection():
    model = next(t for t in TOYS if t.name == "conv").build()
    z = np.random.default_rng(5).standard_normal((6, 1, 1)).astype(np.float32)
    at_bn = select_boundaries(model, "main.1", z, keep=0.1, steps=25)  # BatchNorm output, before the ReLU
    at_relu = select_boundaries(model, "main.2", z, keep=0.1, steps=25)
    np.testing.assert_array_equal(at_bn.theta, at_relu.theta)
    np.testing.assert_array_equal(at_bn.units, at_relu.units)
    assert at_bn.fidelity == pytest.approx(at_relu.fidelity, rel=1e-6)


def _manual_fidelity(model, z, units):
    """Conv toy, layer main.2: zero the other units by hand and run the rest of the network."""
    m = model.main
    with torch.no_grad():
        h = m[2](m[1](m[0](z)))  # (1, 8, 4, 4)
        mask = torch.zeros(h.numel())
        mask[torch.from_numpy(units)] = 1
        out = m[7](m[6](m[5](m[4](m[3](h * mask.view(h.shape))))))
        ref = model(z)
    return float((out - ref).norm() / ref.norm())


def test_fidelity_equals_manual_masked_forward():
    model = next(t for t in TOYS if t.name == "conv").build()
    z = torch.randn(1, 6, 1, 1, generator=torch.Generator().manual_seed(0))
    for keep in (None, 0.1, 0.5):
        sel = select_boundaries(model, "main.2", z[0], keep=keep, steps=30)
        assert sel.fidelity == pytest.approx(_manual_fidelity(model, z, sel.units), rel=1e-5, abs=1e-7)
        if keep is not None:
            assert sel.units.size == int(np.ceil(keep * 128))


def test_deterministic_with_the_same_seed_and_thread_count_free():
    model = next(t for t in TOYS if t.name == "conv").build()
    z = np.random.default_rng(1).standard_normal((6, 1, 1)).astype(np.float32)
    a = select_boundaries(model, "main.5", z, keep=0.2, steps=40, seed=3)
    b = select_boundaries(model, "main.5", z, keep=0.2, steps=40, seed=3)
    c = select_boundaries(model, "main.5", z, keep=0.2, steps=40, seed=4)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.units, b.units)
    assert a.fidelity == b.fidelity
    assert not np.array_equal(a.theta, c.theta)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        d = select_boundaries(model, "main.5", z, keep=0.2, steps=40, seed=3)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(a.theta, d.theta)


def test_classifier_preserves_logits_better_than_random_units():
    model = tiny_classifier()
    image = np.random.default_rng(2).standard_normal((1, 8, 8)).astype(np.float32)
    sel = select_boundaries(model, "features.1", image, keep=0.1)  # 26 of 256 units
    rng = np.random.default_rng(3)
    region = GenerativeRegion(model, "features.1", image)
    on = np.flatnonzero(region.query_values > 0)
    random_errors = []
    for _ in range(20):  # random sets of on-units of the same size: a fair, not a strawman, baseline
        units = rng.choice(on, sel.units.size, replace=False)
        mask = torch.zeros(256)
        mask[torch.from_numpy(units)] = 1
        with torch.no_grad():
            x = torch.from_numpy(image)[None]
            h = model.features[2](model.features[1](model.features[0](x)) * mask.view(1, 4, 8, 8))
            random_errors.append(float((model.classifier(h) - model(x)).norm() / model(x).norm()))
    assert sel.fidelity < np.median(random_errors)
    assert set(sel.units.tolist()) <= set(on.tolist())  # an off ReLU unit carries nothing to keep


def test_region_of_selection():
    model = planted()
    sel = select_boundaries(model, "1", QUERY, steps=50)
    region = sel.region()
    assert isinstance(region, GenerativeRegion)
    np.testing.assert_array_equal(region.units, sel.units)
    assert region.contains(QUERY[None]).all()
    Z = np.random.default_rng(4).standard_normal((500, 6)).astype(np.float32)
    full = GenerativeRegion(model, "1", QUERY)
    np.testing.assert_array_equal(region.mismatches(Z), full.restrict(sel.units).mismatches(Z))


def test_model_left_untouched():
    model = next(t for t in TOYS if t.name == "batchnorm").build()  # training mode
    model[3].eval()
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    select_boundaries(model, "2", np.ones(4, np.float32), steps=20)
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    for k, v in model.state_dict().items():  # BN running stats not updated: it ran in eval mode
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(keep=0), ValueError, r"keep must be a fraction in \(0, 1\]"),
    (dict(keep=1.5), ValueError, "keep must be a fraction"),
    (dict(keep=-0.1), ValueError, "keep must be a fraction"),
    (dict(keep=float("nan")), ValueError, "keep must be finite"),
    (dict(keep="5%"), TypeError, "keep must be a real number"),
    (dict(keep=True), TypeError, "keep"),
    (dict(sparsity=-1.0), ValueError, "sparsity must be >= 0"),
    (dict(steps=0), ValueError, "steps must be a positive int"),
    (dict(samples=0), ValueError, "samples"),
    (dict(lr=0.0), ValueError, "lr must be > 0"),
    (dict(temperature=-1.0), ValueError, "temperature must be > 0"),
    (dict(init=1.0), ValueError, r"init must be a probability in \(0, 1\)"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(layer="9"), ValueError, r"unknown layer .9."),
    (dict(query=np.zeros(5, np.float32)), ValueError, "does not fit the model"),
    (dict(query=np.full(6, np.inf, np.float32)), ValueError, "NaN or inf"),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(layer="1", query=QUERY)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        select_boundaries(planted(), **args)


def test_model_with_tuple_output_is_rejected():
    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 4)

        def forward(self, z):
            h = self.fc(z)
            return h, h

    with pytest.raises(TypeError, match="single output tensor"):
        select_boundaries(Pair(), "fc", np.zeros(3, np.float32))
