"""Generative regions on the face DCGAN: what a membership query costs, and what fewer boundaries buy.

    pytest bench/bench_region.py --benchmark-enable   # membership at main.2 / main.5 vs the full forward
    python bench/bench_region.py [--queries 3]         # the table: fidelity and region size per share of boundaries

Membership runs only the prefix up to the layer: at main.2 (the first ReLU) it must cost about the prefix
(layer_output), far less than the whole generator (model(z)). The table gives, at the first two ReLUs, for
keep = 100% (every unit), 10%, 5%, 1% and the optimiser's own choice (None): the fidelity (relative output error
with only the kept units) and the median distance from the query to the region's boundary along 64 random unit
directions. Fewer boundaries must give a larger region.
"""
import argparse
import time

import numpy as np
import pytest
import torch

import egbas_fast as eg
from egbas_fast.layers import layer_output
from egbas_fast.region import GenerativeRegion

BATCH = 512
LAYERS = ("main.2", "main.5")


@pytest.fixture(scope="module")
def face():
    generator = eg.zoo.face_dcgan()
    z = torch.randn(BATCH, 100, 1, 1, generator=torch.Generator().manual_seed(0))
    return generator, z


@pytest.mark.parametrize("layer", LAYERS)
def test_membership(benchmark, face, layer):
    generator, z = face
    region = GenerativeRegion(generator, layer, z[0], batch_size=BATCH)
    Z = z.view(BATCH, 100).numpy()
    benchmark.group = f"{BATCH} latents"
    benchmark.name = f"contains at {layer}"
    benchmark(region.contains, Z)


@pytest.mark.parametrize("layer", LAYERS)
def test_prefix_forward(benchmark, face, layer):
    generator, z = face
    benchmark.group = f"{BATCH} latents"
    benchmark.name = f"prefix forward to {layer}"
    benchmark(layer_output, generator, layer, z)


def test_full_forward(benchmark, face):
    generator, z = face

    def full():
        with torch.no_grad():
            return generator(z)

    benchmark.group = f"{BATCH} latents"
    benchmark.name = "full forward (model(z))"
    benchmark(full)


def _seconds(fn, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3, help="query latents (seeds 0..N-1)")
    parser.add_argument("--directions", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = eg.zoo.face_dcgan()
    print(f"torch threads: {torch.get_num_threads()}")

    z = torch.randn(BATCH, 100, 1, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = _seconds(lambda: generator(z))
    print(f"\n{BATCH} latents: full forward {1e3 * full:.1f} ms")
    for layer in LAYERS:
        region = GenerativeRegion(generator, layer, z[0], batch_size=BATCH)
        Z = z.view(BATCH, 100).numpy()
        prefix = _seconds(lambda: layer_output(generator, layer, z))
        member = _seconds(lambda: region.contains(Z))
        print(f"  {layer}: prefix forward {1e3 * prefix:.1f} ms, contains {1e3 * member:.1f} ms "
              f"({member / full:.0%} of the full forward)")

    rng = np.random.default_rng(12345)
    directions = rng.standard_normal((args.directions, 100))
    print("\n| layer | keep | units | fidelity | median boundary distance | select s |")
    print("|---|---|---|---|---|---|")
    for layer in LAYERS:
        rows = {}
        for q in range(args.queries):
            query = torch.randn(100, 1, 1, generator=torch.Generator().manual_seed(q))
            for keep in (1.0, 0.1, 0.05, 0.01, None):
                start = time.perf_counter()
                if keep == 1.0:  # every unit: nothing to optimise, the output is unchanged
                    region, fidelity = GenerativeRegion(generator, layer, query), 0.0
                else:
                    sel = eg.select_boundaries(generator, layer, query, keep=keep, seed=q)
                    region, fidelity = sel.region(), sel.fidelity
                seconds = time.perf_counter() - start
                distance = float(np.median(region.boundary_distance(directions)))
                rows.setdefault(keep, []).append((region.units.size, fidelity, distance, seconds))
        for keep, values in rows.items():
            units, fidelity, distance, seconds = (np.array(v) for v in zip(*values))
            label = "None (theta>0.5)" if keep is None else f"{keep:.0%}"
            print(f"| {layer} | {label} | {units.mean():.0f} | {fidelity.mean():.3f} "
                  f"(±{fidelity.std():.3f}) | {np.median(distance):.4f} ({', '.join(f'{d:.4f}' for d in distance)}) "
                  f"| {seconds.mean():.1f} |")


if __name__ == "__main__":
    main()
