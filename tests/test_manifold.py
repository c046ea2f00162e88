"""A generator with a 2-D latent (a VAE with latent_dim=2) gets manifold.png: the decoded latent plane with the
query's region marked."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import egbas_fast as eg
from egbas_fast import models
from egbas_fast.manifold import plane_grid

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_2d_vae_report_draws_the_plane_with_the_region(tmp_path):
    torch.manual_seed(0)
    vae = models.build("vae", (1, 16, 16), latent_dim=2, width=4, extra_layers=0)
    vae.apply(models.init_weights)
    generator = vae.generator.eval()
    sel = eg.select_boundaries(generator, "decoder.main.2", np.array([0.3, -0.2], np.float32), keep=0.1, steps=10)
    region = sel.region()
    eg.explore(region, n=16, progress=False).save(tmp_path / "r", selection=sel)
    assert "manifold.png" in (tmp_path / "r" / "report.html").read_text()
    z = plane_grid()  # (225, 2) the cells, row-major from the top
    inside = region.contains(z)
    assert 0 < inside.sum() < len(z)  # the picture shows both sides of the boundary
    with Image.open(tmp_path / "r" / "manifold.png") as im:
        pixels = np.asarray(im.convert("RGB"))
    side = 16 * (40 // 16) + 2 * 3  # tile + frame padding of report.grid_png
    for i, ok in enumerate(inside):
        r, c = divmod(i, 15)
        red = tuple(pixels[r * side + 1, c * side + 1]) == (220, 30, 30)
        assert red == (not ok), i
    # only 2-D latents get one
    sel8 = eg.select_boundaries(models.build("vae", (1, 16, 16), latent_dim=3, width=4, extra_layers=0).generator,
                                "decoder.main.2", np.zeros(3, np.float32), keep=0.1, steps=3)
    eg.explore(sel8.region(), n=8, progress=False).save(tmp_path / "r3", selection=sel8)
    assert not (tmp_path / "r3" / "manifold.png").exists()
