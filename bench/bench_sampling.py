"""sample_region's kernels side by side on the same regions: mixing (split R-hat, effective sample size), cost
(forward evaluations per effective sample, seconds) and where the samples lie (mean distance from the query).

    slice      elliptical slice sampling with the region's indicator (membership only; any layer)
    piecewise  exact HMC through the union of polytopes of an affine -> ReLU -> affine prefix (the default there)
    polytope   exact HMC in the polytope of an affine prefix (the default on the first ReLU layer)

Face DCGAN (zoo.face_dcgan, d = 100), essential boundaries (keep 5%) of main.5 (the second ReLU) for query seeds
0, 1, 2, and of main.2 (the first) for query 0; n = 500 samples, seed 1, every kernel with its own defaults.

    python bench/bench_sampling.py                     # the table (markdown); ~40 min on a busy 2-core box
    python bench/bench_sampling.py --queries 0 --n 200 # a quicker look
    python bench/bench_sampling.py --trajectories 32   # the piecewise trajectory: C++ core vs the numpy oracle

Forwards count the latents whose membership the model evaluated, set-up included (the piecewise kernel's
Jacobian extraction counts three forwards per selected unit); the piecewise kernel also does ~100 forwards' worth
of matrix work per trajectory outside the model, which the seconds column shows. Timings depend on the machine's
load: compare rows of one run only.
"""
import argparse
import sys

import numpy as np
import torch

from egbas_fast import zoo
from egbas_fast.demo import query_latent
from egbas_fast.sampling import sample_region
from egbas_fast.selection import select_boundaries

KEEP = 0.05


def sampling_table(query_seeds=(0, 1, 2), n=500, layers=("main.5", "main.2")):
    model = zoo.face_dcgan()
    print(f"\n| layer | query | units | kernel | chains | warm-up | R-hat | ESS / {n} | forwards | forwards / eff. "
          f"sample | mean distance from query | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    cases = [(layer, q) for layer in layers for q in (query_seeds if layer == layers[0] else query_seeds[:1])]
    for layer, q in cases:
        region = select_boundaries(model, layer, query_latent(model, q), keep=KEEP, seed=0).region()
        methods = ("slice", "auto") if layer == layers[0] else ("auto",)
        for method in methods:
            rs = sample_region(region, n=n, seed=1, method=method, progress=False)
            dist = float(np.linalg.norm(rs.latents - region.query, axis=1).mean())
            print(f"| {layer} | {q} | {len(region.units)} | {rs.method} | {rs.chains} | {rs.warmup} | {rs.rhat:.2f} | "
                  f"{rs.ess:.0f} | {rs.evaluations} | {rs.evaluations_per_effective_sample:.1f} | {dist:.2f} | "
                  f"{rs.seconds:.0f} |")
            sys.stdout.flush()


def trajectory_table(n_trajectories=32, layer="main.5", query_seed=0):
    """One piecewise trajectory per chain from the query, side by side: core.PiecewiseHMC on 1 and 2 threads vs
    the plain numpy version (tests/piecewise_oracle.py, the oracle the core is tested against); same velocities,
    so the same trajectories (the ends are compared)."""
    import copy
    import time
    from pathlib import Path

    from egbas_fast import core
    from egbas_fast.sampling import HMC_TIME, MAX_BOUNCES, piecewise_affine

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.piecewise_oracle import Piece, trajectory

    model = zoo.face_dcgan()
    region = select_boundaries(model, layer, query_latent(model, query_seed), keep=KEEP, seed=0).region()
    pw, _ = piecewise_affine(region)
    z0 = region.query.astype(np.float64)
    w0 = np.where(pw.A @ z0 + pw.c > 0, 1.0, pw.slope)
    Z = np.repeat(z0[None], n_trajectories, 0)
    V = np.random.default_rng(0).standard_normal(Z.shape)
    rows, ends = [], []
    for threads in (1, 2):
        core.set_num_threads(threads)
        hmc = core.PiecewiseHMC(pw.A, pw.c, pw.slope, pw.L, pw.e, w0)
        t = time.perf_counter()
        end, bounces, _ = hmc.run(Z, V, HMC_TIME, MAX_BOUNCES)
        rows.append((f"core.PiecewiseHMC, {threads} thread{'s' * (threads > 1)}", time.perf_counter() - t))
        ends.append(end)
    core.set_num_threads(0)
    first = Piece(pw, w0)
    t = time.perf_counter()
    oracle = [trajectory(pw, copy.deepcopy(first), z, v)[0] for z, v in zip(Z, V)]
    rows.append(("numpy (tests/piecewise_oracle.py)", time.perf_counter() - t))
    print(f"\n{layer}, query {query_seed}, keep {KEEP}: m = {len(pw.c)} hidden units, k = {len(pw.e)} selected, "
          f"L {np.count_nonzero(pw.L) / pw.L.size:.0%} nonzero; {n_trajectories} trajectories, mean "
          f"{bounces.mean():.0f} walls; largest difference of the ends from numpy's: "
          f"{max(np.abs(e - np.array(oracle)).max() for e in ends):.1e}")
    print("| way | seconds | ms per trajectory | vs numpy |\n|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / n_trajectories:.0f} | {rows[-1][1] / seconds:.1f}x |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (default 1: avoids spin contention on a busy box)")
    parser.add_argument("--trajectories", type=int, default=0,
                        help="only time N piecewise trajectories at face main.5: C++ core vs numpy")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    if args.trajectories:
        trajectory_table(args.trajectories)
        return 0
    sampling_table(tuple(args.queries), args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
