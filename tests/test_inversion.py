"""invert / encode on tiny models: reconstruction, the latent's form, image conversion, clear errors before work."""
import numpy as np
import pytest
import torch
from PIL import Image

import egbas_fast as eg
from egbas_fast import core, models
from egbas_fast.inversion import encode_image, load_image, psnr

from .toys import conv_generator


def _toy_generator(seed=5):
    """The 16x16 toy DCGAN (latent (6, 1, 1), Tanh output) with the egbas_config of a real generator."""
    g = conv_generator(seed)
    g.egbas_config = {"input_shape": [6, 1, 1], "output_shape": [1, 16, 16]}
    return g


def _generated(g, seed):
    z = core.random_normal(1, 6, 100 + seed)[0].reshape(6, 1, 1)
    with torch.no_grad():
        return z, g(torch.from_numpy(z)[None])[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invert_reproduces_generated_images(seed, one_torch_thread):
    g = _toy_generator()
    _, x = _generated(g, seed)
    inv = eg.invert(g, x, steps=200, restarts=4, seed=seed, progress=False)
    assert inv.latent.shape == (6, 1, 1) and inv.latent.dtype == np.float32
    with torch.no_grad():
        again = g(torch.from_numpy(inv.latent)[None])[0]
    torch.testing.assert_close(inv.output, again)  # .output is the generator's output at .latent
    assert inv.psnr == pytest.approx(psnr(again, x, (-1.0, 1.0)))
    assert inv.psnr > 25.0  # 6 latent numbers, 256 pixels: a generated image is reachable
    assert inv.losses.shape == (200,) and inv.losses[-1] < inv.losses[0]


def test_invert_is_deterministic_and_seeded(one_torch_thread):
    g = _toy_generator()
    _, x = _generated(g, 0)
    a = eg.invert(g, x, steps=20, restarts=2, seed=3, progress=False)
    b = eg.invert(g, x, steps=20, restarts=2, seed=3, progress=False)
    c = eg.invert(g, x, steps=20, restarts=2, seed=4, progress=False)
    np.testing.assert_array_equal(a.latent, b.latent)
    assert not np.array_equal(a.latent, c.latent)


def test_prior_term_keeps_the_latent_in_the_typical_set(one_torch_thread):
    """A target far from every output (a constant image) pulls z anywhere; the prior term holds |z|^2 / d near 1."""
    g = _toy_generator()
    x = torch.full((1, 16, 16), 0.9)
    free = eg.invert(g, x, steps=150, restarts=1, prior_weight=0.0, lr=0.5, seed=0, progress=False)
    held = eg.invert(g, x, steps=150, restarts=1, prior_weight=10.0, lr=0.5, seed=0, progress=False)
    r_free, r_held = (float(np.mean(i.latent ** 2)) for i in (free, held))
    assert abs(r_held - 1) < 0.1
    assert abs(r_held - 1) < abs(r_free - 1)


def test_invert_reads_image_files_and_pil_images(tmp_path, one_torch_thread):
    g = _toy_generator()
    _, x = _generated(g, 1)
    pixels = np.rint((x[0].numpy() + 1) * 127.5).astype(np.uint8)  # (16, 16)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "rgb.png")  # converted to grey
    for source in (tmp_path / "grey.png", str(tmp_path / "rgb.png"), Image.fromarray(pixels)):
        target = load_image(source, (1, 16, 16), (-1.0, 1.0))
        assert target.shape == (1, 16, 16)
        assert float((target - x).abs().max()) < 1.01 / 255 * 2  # 8-bit quantisation only
    # a larger picture, with a margin to crop, is centre-cropped and resized to the model's size
    Image.fromarray(np.pad(pixels, ((0, 0), (4, 4)))).resize((72, 48), Image.NEAREST).save(tmp_path / "big.png")
    target = load_image(tmp_path / "big.png", (1, 16, 16), (-1.0, 1.0))
    assert target.shape == (1, 16, 16)
    assert np.corrcoef(target.flatten().numpy(), x.flatten().numpy())[0, 1] > 0.7
    inv = eg.invert(g, tmp_path / "grey.png", steps=200, restarts=4, progress=False)
    assert inv.psnr > 20.0
    # a [0, 1] generator (Sigmoid output) gets its file images in [0, 1]
    sig = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Unflatten(1, (1, 4, 4)), torch.nn.Sigmoid())
    inv = eg.invert(sig, tmp_path / "big.png", steps=3, restarts=1, latent_shape=(3,), progress=False)
    assert inv.target.min() >= 0 and inv.value_range == (0.0, 1.0)


@pytest.mark.parametrize("image, error, message", [
    (torch.zeros(1, 8, 8), ValueError, "shape (1, 16, 16)"),
    (torch.full((1, 16, 16), float("nan")), ValueError, "NaN"),
    (torch.full((1, 16, 16), 200.0), ValueError, "outside the model's range"),
    (np.zeros((1, 16, 16), bool), TypeError, "real numbers"),
    ("/no/such/picture.png", FileNotFoundError, "no image file"),
])
def test_bad_images_fail_before_any_forward(image, error, message):
    g = _toy_generator()
    calls = []
    g.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        eg.invert(g, image, progress=False)
    assert not calls


def test_invert_argument_errors():
    g = _toy_generator()
    x = torch.zeros(1, 16, 16)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        eg.invert(lambda z: z, x)
    with pytest.raises(ValueError, match="steps"):
        eg.invert(g, x, steps=0)
    bare = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Unflatten(1, (1, 4, 4)))  # no range, no config
    with pytest.raises(ValueError, match="latent_shape="):
        eg.invert(bare, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="value_range="):
        eg.invert(bare, "x.png", latent_shape=(3,))


def _bundle(kind):
    torch.manual_seed(0)
    bundle = models.build(kind, (1, 16, 16), latent_dim=3, width=4)
    bundle.apply(models.init_weights)
    return bundle.eval()


def test_encode_ae_is_the_encoders_code():
    ae = _bundle("ae")
    x = torch.rand(1, 16, 16) * 2 - 1
    z = eg.encode(ae, x)
    with torch.no_grad():
        np.testing.assert_allclose(z, ae.encoder(x[None])[0].numpy(), rtol=1e-6, atol=1e-6)


def test_encode_vae_gives_the_u_the_latent_map_sends_to_the_code():
    vae = _bundle("vae")
    for seed in range(3):
        x = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        u = eg.encode(vae, x)
        assert u.shape == (3,) and u.dtype == np.float32
        with torch.no_grad():
            mu = vae.encoder(x[None]).chunk(2, dim=1)[0][0]
            amortised = vae.latent_encoder(mu[None]).chunk(2, dim=1)[0][0]
            mapped = vae.generator.latent_map(torch.from_numpy(u)[None])[0]
            start = vae.generator.latent_map(amortised[None])[0]
        assert float((mapped - mu).norm()) <= float((start - mu).norm())  # never worse than the amortised guess
    # a code the map reaches (the encoder made to return latent_map(u*)) is matched closely
    u_star = torch.tensor([[0.3, -0.5, 0.8]])
    with torch.no_grad():
        code = vae.generator.latent_map(u_star)
    vae.encoder.forward = lambda image: torch.cat([code, torch.zeros_like(code)], 1).expand(len(image), -1)
    u = eg.encode(vae, x)
    with torch.no_grad():
        reached = vae.generator.latent_map(torch.from_numpy(u)[None])
    assert float((reached - code).norm()) < 0.05 * float(code.norm())
    inv = encode_image(vae, x)
    with torch.no_grad():
        torch.testing.assert_close(inv.output, vae.generator(torch.from_numpy(inv.latent)[None])[0])
    assert inv.method == "encoder" and np.isfinite(inv.psnr)


def test_encode_refuses_a_lone_generator():
    vae = _bundle("vae")
    with pytest.raises(TypeError, match="part='all'"):
        eg.encode(vae.generator, torch.zeros(1, 16, 16))
    with pytest.raises(TypeError, match="eg.invert"):
        eg.encode(_bundle("dcgan").generator, torch.zeros(1, 16, 16))
