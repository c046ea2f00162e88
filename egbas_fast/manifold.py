"""The latent plane of a generator with a 2-D latent (a VAE with latent_dim=2): decoded on a grid, as in Kingma &
Welling (2014), fig. 4, with the query's region marked: cells outside it get a red frame."""
import numpy as np

CELLS = 15  # cells per side


def plane_grid(cells=CELLS):
    """(cells * cells, 2) float32 latents at the N(0, 1) quantiles 0.05 .. 0.95 of each axis, rows from the top
    (u2 high) to the bottom, so the picture reads like the plane."""
    from statistics import NormalDist

    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, cells)], np.float32)
    u1, u2 = np.meshgrid(q, q[::-1])
    return np.ascontiguousarray(np.stack([u1.ravel(), u2.ravel()], axis=1))


def manifold_png(region, cells=CELLS):
    """PNG bytes of the decoded grid over the latent plane of a 2-D `region`, red frames where outside it."""
    from .report import grid_png, to_images

    if region.dim != 2:
        raise ValueError(f"the manifold picture needs a 2-D latent, this one has {region.dim} dimensions")
    z = plane_grid(cells)
    inside = np.asarray(region.contains(z.reshape(len(z), *region.query_shape)), bool)
    return grid_png(to_images(region.generate(z)), outside=~inside, cols=cells, cell=40)

