"""Explorer throughput, side by side on ONE region: accepted tree nodes per second of

    explore   egbas_fast.exploration.explore (batched RRT, C++ nearest/steer, one forward per round)
    naive     a direct reading of the paper in plain Python: one proposal at a time, numpy argmin over all nodes,
              one model forward per proposal
    ompl      OMPL's RRT (PyPI `ompl`) in a RealVectorStateSpace whose state validity checker runs the same
              membership test (one forward per state; motions are checked at their end state only, as explore does)

on the face DCGAN (zoo.face_dcgan, d = 100), essential boundaries (keep 5%) of its first ReLU layer, trees of 1k
and 10k nodes, all with the same step and radius (explore's defaults for that region). Also: the share of
explore's time spent outside the model's forward pass (first and a middle ReLU layer, 10k nodes), how exact
nearest search scales against the forward, and explore's default acceptance on the DCGANs at every ReLU layer with keep in {1%, 5%, 10%}.

    python bench/bench_explore.py                  # throughput + outside-forward tables (markdown)
    python bench/bench_explore.py --acceptance     # explore's default acceptance per layer and keep
    python bench/bench_explore.py --coverage       # reach / diversity of the default tree against sample_region
    python bench/bench_explore.py --outside 10000 100000   # time outside the forward, local and prior mode
    pytest bench/bench_explore.py --benchmark-enable -s    # the throughput runs as pytest-benchmark entries

Timings depend on the machine's load: compare rows of one run only.
"""
import argparse
import contextlib
import sys
import time

import numpy as np
import pytest
import torch

from egbas_fast import core, region as region_module, zoo
from egbas_fast.demo import query_latent, relu_layers
from egbas_fast.exploration import default_step_radius, explore
from egbas_fast.selection import select_boundaries

FIRST, MIDDLE = "main.2", "main.5"
KEEP = 0.05
SIZES = (1_000, 10_000)
NAIVE_BUDGET_S = 300.0  # the naive reference runs at 10k only if its 1k rate says it fits in this


# ------------------------------------------------------------------------------------------------------ set-up
_REGIONS = {}


def face_region(layer, keep=KEEP):
    """The benchmark region: face DCGAN, query = prior sample 0, essential boundaries of `layer`."""
    if (layer, keep) not in _REGIONS:
        model = zoo.face_dcgan()
        sel = select_boundaries(model, layer, query_latent(model, 0), keep=keep, seed=0)
        region = sel.region()
        _REGIONS[layer, keep] = region, *default_step_radius(region, seed=0)
    return _REGIONS[layer, keep]


@contextlib.contextmanager
def forward_timer():
    """Accumulate the wall time of every prefix forward that region membership runs (model up to the layer)."""
    spent = [0.0]
    original = region_module.prefix_output

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    region_module.prefix_output = timed
    try:
        yield spent
    finally:
        region_module.prefix_output = original


# ---------------------------------------------------------------------------------------------------- methods
def run_explore(region, n, step, radius, seed=0, repeats=1):
    """explore's run; with repeats > 1 the median time of that many identical runs (load spikes on a shared box
    hit a 1-second run much harder than the 100-second runs of the other methods)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = explore(region, n=n, step=step, radius=radius, seed=seed, progress=False)
        times.append(time.perf_counter() - t)
    return {"nodes": len(res.latents), "proposals": res.proposals, "seconds": float(np.median(times))}


def run_naive(region, n, step, radius, seed=0):
    """One proposal at a time: numpy target, numpy argmin over every node, one forward per proposal."""
    rng = np.random.default_rng(seed)
    q = region.query
    nodes = np.empty((n, region.dim), np.float32)
    nodes[0] = q
    size, proposals = 1, 0
    t = time.perf_counter()
    while size < n:
        target = q + rng.uniform(-radius, radius, region.dim).astype(np.float32)
        near = int(((nodes[:size] - target) ** 2).sum(axis=1).argmin())
        delta = target - nodes[near]
        dist = float(np.linalg.norm(delta))
        cand = nodes[near] + delta * min(1.0, step / dist) if dist > 0 else target
        proposals += 1
        if region.contains(cand[None])[0]:
            nodes[size] = cand
            size += 1
    return {"nodes": size, "proposals": proposals, "seconds": time.perf_counter() - t}


_OMPL_SEEDED = []


def run_ompl(region, n, step, radius, seed=0):
    """OMPL's RRT, range = step, sampling the same box; stops when the tree has n nodes (start included)."""
    from ompl import base as ob
    from ompl import geometric as og
    from ompl import util as ou

    ou.setLogLevel(ou.LOG_WARN)
    if not _OMPL_SEEDED:  # OMPL takes one global seed, before its first random number
        ou.RNG.setSeed(seed + 1)
        _OMPL_SEEDED.append(True)
    d, q = region.dim, region.query.astype(np.float64)
    space = ob.RealVectorStateSpace(d)
    bounds = ob.RealVectorBounds(d)
    for i in range(d):
        bounds.setLow(i, float(q[i] - radius))
        bounds.setHigh(i, float(q[i] + radius))
    space.setBounds(bounds)
    space.setLongestValidSegmentFraction(0.999)  # a motion shorter than the box checks its end state only
    si = ob.SpaceInformation(space)
    added = [0]
    buf = np.empty((1, d), np.float32)

    def valid(state):
        for i in range(d):
            buf[0, i] = state[i]
        inside = bool(region.contains(buf)[0])
        added[0] += inside
        return inside

    si.setStateValidityChecker(valid)
    si.setup()
    start, goal = space.allocState(), space.allocState()
    for i in range(d):
        start[i] = float(q[i])
        goal[i] = float(q[i] + radius)  # a corner of the box: never reached exactly
    pdef = ob.ProblemDefinition(si)
    pdef.addStartState(start)
    g = ob.GoalState(si)
    g.setState(goal)
    g.setThreshold(1e-12)
    pdef.setGoal(g)
    planner = og.RRT(si)
    planner.setRange(float(step))
    planner.setGoalBias(0.0)
    planner.setProblemDefinition(pdef)
    planner.setup()
    t = time.perf_counter()
    planner.solve(ob.PlannerTerminationCondition(lambda: added[0] >= n))  # start state's check counts as 1
    seconds = time.perf_counter() - t
    data = ob.PlannerData(si)
    planner.getPlannerData(data)
    return {"nodes": data.numVertices(), "proposals": None, "seconds": seconds}


METHODS = {"explore": run_explore, "naive": run_naive, "ompl": run_ompl}


def rate(run):
    return (run["nodes"] - 1) / run["seconds"]


# ------------------------------------------------------------------------------------------------------ tables
def throughput_table():
    region, step, radius = face_region(FIRST)
    print(f"\nregion: face DCGAN {FIRST}, {len(region.units)}/{region.n_units} units, step {step:.4g}, "
          f"radius {radius:.4g}, torch threads {torch.get_num_threads()}, core threads {core.get_num_threads()}")
    print("| nodes | method | nodes/s | seconds | explore speed-up |")
    print("|---|---|---|---|---|")
    naive_1k = None
    for n in SIZES:
        runs = {"explore": run_explore(region, n, step, radius, repeats=3)}
        for name in ("naive", "ompl"):
            if name == "naive" and naive_1k and naive_1k["seconds"] * n / SIZES[0] * 1.5 > NAIVE_BUDGET_S:
                runs[name] = None  # too slow to time here: extrapolated below
                continue
            runs[name] = METHODS[name](region, n, step, radius)
            naive_1k = naive_1k or (runs[name] if name == "naive" else None)
        for name, run in runs.items():
            if run is None:  # its 1k rate; optimistic, as its argmin cost grows with the tree
                r = rate(naive_1k)
                print(f"| {n} | {name} (extrapolated from 1k) | {r:.1f} | ~{(n - 1) / r:.0f} | "
                      f"{rate(runs['explore']) / r:.1f}x |")
                continue
            print(f"| {n} | {name} | {rate(run):.1f} | {run['seconds']:.1f} | "
                  f"{rate(runs['explore']) / rate(run):.1f}x |")
        sys.stdout.flush()


def outside_forward_table(sizes=(SIZES[-1],), layers=(FIRST, MIDDLE), modes=("local", "prior")):
    """Share of explore's time outside the model's forward: local mode (same step/radius as above) and the default
    prior mode (targets from the restricted-prior sampler, whose forwards count as forward time)."""
    print("\n| layer | mode | nodes | explore s | forward s | outside forward |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        for layer in layers:
            region, step, radius = face_region(layer)
            for mode in modes:
                with forward_timer() as spent:
                    if mode == "local":
                        run = run_explore(region, n, step, radius)
                    else:
                        t = time.perf_counter()
                        res = explore(region, n=n, seed=0, progress=False)
                        run = {"nodes": len(res.latents), "seconds": time.perf_counter() - t}
                print(f"| {layer} | {mode} | {run['nodes']} | {run['seconds']:.1f} | {spent[0]:.1f} | "
                      f"{1 - spent[0] / run['seconds']:.1%} |")
                sys.stdout.flush()


def scaling_table(sizes=(1_000, 10_000, 100_000), batch=256, repeats=5):
    """Per round of 256 proposals: exact nearest over N nodes vs the forward at the first and middle layer."""
    rng = np.random.default_rng(0)
    print(f"\n| per round of {batch} | time (ms) |")
    print("|---|---|")
    queries = rng.standard_normal((batch, 100)).astype(np.float32)
    for n in sizes:
        tree = core.Tree(100, capacity=n)
        tree.add(rng.standard_normal((n, 100)).astype(np.float32), np.full(n, -1, np.int64))
        print(f"| Tree.nearest, {n} nodes | {1e3 * _median_time(lambda: tree.nearest(queries), repeats):.2f} |")
    for layer in (FIRST, MIDDLE):
        region, step, _ = face_region(layer)
        z = (region.query + step * queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        print(f"| region.contains at {layer} | {1e3 * _median_time(lambda: region.contains(z), repeats):.2f} |")
    sys.stdout.flush()


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def coverage_table(n=2_000, query_seeds=(0, 1, 2), samples=500, only=None):
    """Default explore (targets from the restricted prior) against sample_region on the same region: reach and
    output diversity (tree / samples), spread along the samples' main axes, and the sampler's own figures."""
    from egbas_fast.demo import mnist_dcgan
    from egbas_fast.metrics import coverage
    from egbas_fast.sampling import sample_region

    print(f"\n| model | layer | query | units | reach | diversity | spread (3 main axes) | tree inside | explore s | "
          f"sampler | R-hat | ESS / {samples} | forwards / eff. sample |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    faces, mnist = zoo.face_dcgan(), mnist_dcgan()
    mnist_layers = relu_layers(mnist)
    cases = [("faces", faces, layer, q) for layer in (FIRST, MIDDLE) for q in query_seeds]
    cases += [("mnist", mnist, layer, 0) for layer in (mnist_layers[0], mnist_layers[len(mnist_layers) // 2])]
    if only:  # e.g. ["mnist:main.11:0", "faces:main.8:0"]
        models = {"faces": faces, "mnist": mnist}
        cases = [(name, models[name], layer, int(q)) for name, layer, q in (o.split(":") for o in only)]
    for name, model, layer, q in cases:
        sel = select_boundaries(model, layer, query_latent(model, q), keep=KEEP, seed=0)
        region = sel.region()
        res = explore(region, n=n, seed=0, progress=False)
        rs = sample_region(region, n=samples, seed=1, progress=False)
        cov = coverage(region, res.latents, rs.latents, seed=0)
        inside = region.contains(res.latents).mean()
        spread = ", ".join(f"{s:.2f}" for s in cov.spread[:3])
        print(f"| {name} | {layer} | {q} | {len(sel.units)} | {cov.reach:.2f} | {cov.diversity:.2f} | {spread} | "
              f"{inside:.1%} | {res.seconds:.0f} | {rs.method} | {rs.rhat:.2f} | {rs.ess:.0f} | "
              f"{rs.evaluations_per_effective_sample:.1f} |")
        sys.stdout.flush()


def acceptance_table(n=500):
    from egbas_fast.demo import mnist_dcgan

    print("\n| model | layer | keep | units | acceptance | bisection share | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, model in (("faces", zoo.face_dcgan()), ("mnist", mnist_dcgan())):
        query = query_latent(model, 0)
        for layer in relu_layers(model):
            for keep in (0.01, 0.05, 0.10):
                sel = select_boundaries(model, layer, query, keep=keep, seed=0)
                res = explore(sel.region(), n=n, seed=0, progress=False)
                print(f"| {name} | {layer} | {keep:.0%} | {len(sel.units)} | {res.acceptance:.1%} | "
                      f"{res.salvaged / max(res.accepted, 1):.1%} | {res.seconds:.1f} |")
                sys.stdout.flush()


# ------------------------------------------------------------------------------------------ pytest-benchmark
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("method", list(METHODS))
def test_nodes_per_second(benchmark, method, n):
    if method == "ompl":
        pytest.importorskip("ompl")
    if method == "naive" and n > SIZES[0]:
        pytest.skip("the naive reference is timed at 1k nodes (see the table for 10k)")
    region, step, radius = face_region(FIRST)
    run = benchmark.pedantic(METHODS[method], args=(region, n, step, radius), rounds=1, iterations=1)
    benchmark.extra_info["nodes_per_second"] = rate(run)
    assert run["nodes"] >= n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acceptance", action="store_true", help="print the acceptance table instead")
    parser.add_argument("--coverage", action="store_true", help="print the coverage table (explore vs sample_region)")
    parser.add_argument("--only", nargs="+", default=None, metavar="MODEL:LAYER:QUERY",
                        help="coverage rows to run instead of the default table, e.g. mnist:main.11:0 faces:main.8:0")
    parser.add_argument("--outside", type=int, nargs="+", default=None, metavar="N",
                        help="print only the outside-forward table at these tree sizes (e.g. 10000 100000)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own); 1 avoids spin contention on a busy box")
    args = parser.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.acceptance:
        acceptance_table()
    elif args.coverage:
        coverage_table(only=args.only)
    elif args.outside:
        outside_forward_table(sizes=args.outside)
    else:
        throughput_table()
        outside_forward_table()
        scaling_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
