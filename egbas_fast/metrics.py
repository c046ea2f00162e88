"""How much of the region an exploration covers, measured against samples of the restricted prior.

    reach      mean |node - query| / mean |sample - query|          (1 = the tree goes as far as the region does)
    diversity  mean pairwise L2 of generated outputs, tree / samples (1 = its images vary as much)
    spread     per main axis of the samples (PCA, top 3): std of the tree along it / std of the samples
and the homogeneity figure of the report: how fast the output changes with the latent (output distance to the
query's output per unit of latent distance) for latents inside the region and for ε samples that leak out.
"""
from dataclasses import asdict, dataclass

import numpy as np

REGION_SAMPLES = 256  # samples of the restricted prior a tree is compared with (report, sweep rows): at deep
# layers each costs a reflective trajectory (~0.3 s on the demo's mnist main.11, 2 s on face main.8, 2 cores)
OUTPUT_SAMPLES = 256  # latents per set whose generated outputs give a diversity
SPREAD_AXES = 3


def output_diversity(outputs):
    """Mean pairwise L2 distance between the (n, ...) outputs (0 for fewer than two)."""
    import torch

    flat = torch.as_tensor(np.asarray(outputs.detach().cpu() if hasattr(outputs, "detach") else outputs,
                                      np.float64)).reshape(len(outputs), -1)
    return float(torch.pdist(flat).mean()) if len(flat) > 1 else 0.0


def _pick(latents, k, rng):
    return latents[np.sort(rng.permutation(len(latents))[:k])]


@dataclass
class Coverage:
    reach: float
    diversity: float
    spread: tuple  # SPREAD_AXES ratios, largest axis first
    tree_mean_distance: float
    samples_mean_distance: float
    tree_diversity: float
    samples_diversity: float

    def as_dict(self):
        out = asdict(self)
        out["spread"] = [float(s) for s in self.spread]
        return out


def coverage(region, tree_latents, sample_latents, seed=0, n_outputs=OUTPUT_SAMPLES):
    """Coverage of `tree_latents` (m, d) against `sample_latents` (n, d) of the same region (see the module)."""
    tree = np.asarray(tree_latents, np.float32)
    samples = np.asarray(sample_latents, np.float32)
    query = np.asarray(region.query, np.float32)
    rng = np.random.default_rng(seed)
    tree_dist = float(np.linalg.norm(tree - query, axis=1).mean())
    sample_dist = float(np.linalg.norm(samples - query, axis=1).mean())
    tree_div = output_diversity(region.generate(_pick(tree, n_outputs, rng)))
    sample_div = output_diversity(region.generate(_pick(samples, n_outputs, rng)))
    centred = samples.astype(np.float64) - samples.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:SPREAD_AXES]  # (k, d)
    tree_std = ((tree.astype(np.float64) - samples.mean(0)) @ axes.T).std(0)
    sample_std = sv[:SPREAD_AXES] / np.sqrt(len(samples))
    return Coverage(reach=tree_dist / sample_dist if sample_dist > 0 else float("nan"),
                    diversity=tree_div / sample_div if sample_div > 0 else float("nan"),
                    spread=tuple(float(a / b) if b > 0 else float("nan") for a, b in zip(tree_std, sample_std)),
                    tree_mean_distance=tree_dist, samples_mean_distance=sample_dist,
                    tree_diversity=tree_div, samples_diversity=sample_div)


def output_change_per_distance(region, latents, query_output, seed=0, n_outputs=OUTPUT_SAMPLES):
    """Mean over latents of |G(z) - G(query)| / |z - query|: how fast the output moves per unit of latent."""
    latents = np.asarray(latents, np.float32)
    dist = np.linalg.norm(latents - np.asarray(region.query, np.float32), axis=1)
    keep = dist > 0
    if not keep.any():
        return float("nan")
    idx = np.flatnonzero(keep)
    idx = idx[np.sort(np.random.default_rng(seed).permutation(len(idx))[:n_outputs])]
    out = region.generate(latents[idx]).double().reshape(len(idx), -1)
    change = (out - query_output.double().reshape(1, -1)).norm(dim=1).numpy()
    return float((change / dist[idx]).mean())
