"""Core benchmarks, side by side in one run.

    pytest bench/bench_core.py --benchmark-enable      # pytest-benchmark tables, grouped per case
    python bench/bench_core.py [--quick] [--threads N] # one table with the ratios

nearest (exact) vs numpy (BLAS-expanded distances + argmin) vs faiss.IndexFlatL2 (search only)
vs the bare product Q @ P.T (the limit: a fused nearest needs those inner products), at 256
queries x {1k, 20k, 100k} points x d in {64, 128, 512}; pack_signs + mismatch_count vs numpy
(packbits, xor, bitwise_count) vs a plain read of the values (values.sum()) on 256 x 65,536.
Every library uses the same number of threads: 2 by default, or EGBAS_BENCH_THREADS / --threads
(set before numpy loads its BLAS, so OpenBLAS/OpenMP obey it too).

Ties: 256 queries against 20,000 copies of one point vs 20,000 random points (d = 128), time and
the peak memory the call adds (each measured in a fresh process).
--compete runs a torch job (512 x 512 matmuls on one thread) in the background throughout, as on a
machine shared with a training run.
"""
import os
import subprocess
import sys
import time

if __name__ == "__main__" and "--threads" in sys.argv:
    os.environ["EGBAS_BENCH_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]
THREADS = int(os.environ.get("EGBAS_BENCH_THREADS", "2"))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import numpy as np
import pytest

from egbas_fast import core

try:
    import faiss
except ImportError:  # the `bench` extra installs it
    faiss = None

QUERIES = 256
NEAREST_CASES = [(n, d) for n in (1_000, 20_000, 100_000) for d in (64, 128, 512)]
PACK_SHAPE = (256, 65_536)


def nearest_methods(points, queries):
    """name -> zero-argument callable, all on the same data."""

    def numpy_nearest():
        pn = np.einsum("ij,ij->i", points, points)
        return np.argmin(pn[None, :] - 2.0 * (queries @ points.T), axis=1)

    methods = {
        "core": lambda: core.nearest(points, queries),
        "numpy": numpy_nearest,
        "gemm": lambda: queries @ points.T,
    }
    if faiss is not None:
        index = faiss.IndexFlatL2(points.shape[1])
        index.add(points)
        methods["faiss"] = lambda: index.search(queries, 1)
    return methods


def pack_methods(values):
    thr = np.float32(0.0)
    ref_bits = core.pack_signs(values[:1], thr)[0]
    mask = np.full_like(ref_bits, np.uint64(2**64 - 1))
    ref_bytes = np.packbits(values[0] > thr, bitorder="little")
    return {
        "core": lambda: core.mismatch_count(core.pack_signs(values, thr), ref_bits, mask),
        "numpy": lambda: np.bitwise_count(np.packbits(values > thr, axis=1, bitorder="little") ^ ref_bytes).sum(1),
        "read": lambda: values.sum(),
    }


def make_nearest_data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d), dtype=np.float32), rng.standard_normal((QUERIES, d), dtype=np.float32)


def make_pack_data(seed=0):
    return np.random.default_rng(seed).standard_normal(PACK_SHAPE, dtype=np.float32)


def set_threads():
    core.set_num_threads(THREADS)
    if faiss is not None:
        faiss.omp_set_num_threads(THREADS)


# ------------------------------------------------------------------ pytest-benchmark

@pytest.fixture(scope="module", autouse=True)
def _threads():
    set_threads()
    yield
    core.set_num_threads(0)


@pytest.mark.parametrize("method", ["core", "numpy", "faiss", "gemm"])
@pytest.mark.parametrize("n,d", NEAREST_CASES)
def test_nearest(benchmark, n, d, method):
    if method == "faiss" and faiss is None:
        pytest.skip("faiss-cpu is not installed (pip install -e '.[bench]')")
    points, queries = make_nearest_data(n, d)
    benchmark.group = f"nearest 256 x {n} x d={d}"
    benchmark(nearest_methods(points, queries)[method])


@pytest.mark.parametrize("kind", ["random", "identical"])
def test_nearest_ties(benchmark, kind):
    points, queries = make_tie_data(kind)
    benchmark.group = "nearest 256 x 20000 x d=128: random points vs 20000 copies of one"
    benchmark(lambda: core.nearest(points, queries))


@pytest.mark.parametrize("method", ["core", "numpy", "read"])
def test_pack_and_compare(benchmark, method):
    values = make_pack_data()
    benchmark.group = "pack_signs + mismatch_count 256 x 65536"
    benchmark(pack_methods(values)[method])


# ------------------------------------------------------------------ script mode

def best_times(methods, repeats, passes=3, budget_s=1.0):
    """The best time of each method in ms (noise only adds time). Each method runs in its own block
    of back-to-back calls, and the blocks alternate over `passes`: interleaving single calls would
    time one library while another's thread pool still spins on the other core (OpenBLAS, OpenMP)."""
    best = {name: float("inf") for name in methods}
    for _ in range(passes):
        for name, fn in methods.items():
            fn()  # warm up (and wake this library's threads)
            start = time.perf_counter()
            for r in range(repeats):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
                if r >= 2 and time.perf_counter() - start > budget_s:
                    break
    return {name: t * 1e3 for name, t in best.items()}


def make_tie_data(kind, n=20_000, d=128, seed=0):
    """`kind` = 'identical' (n copies of one point) or 'random' points, and QUERIES random queries."""
    points, queries = make_nearest_data(n, d, seed)
    return (np.repeat(points[:1], n, 0) if kind == "identical" else points), queries


_PEAK = """
import resource, sys
sys.path.insert(0, {bench!r})
from bench_core import make_tie_data
from egbas_fast import core
core.set_num_threads({threads})
points, queries = make_tie_data({kind!r})
core.nearest(points[:10], queries[:1])  # load and warm the core before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
core.nearest(points, queries)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def peak_extra_mb(kind):
    """Peak resident memory (MB) that one nearest call adds, in a fresh process (ru_maxrss only grows)."""
    code = _PEAK.format(bench=os.path.dirname(os.path.abspath(__file__)), threads=THREADS, kind=kind)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])  # the last line: an editable install may print its rebuild first


COMPETITOR = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a @ a\n"


def main(argv):
    quick = "--quick" in argv
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if "--compete" in argv else None
    try:
        run(quick, competitor is not None)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def run(quick, competing):
    set_threads()
    print(f"egbas core benchmark: {THREADS} threads, isa={core.simd_isa()}, faiss={'yes' if faiss else 'no'}"
          f"{', with a competing 1-thread torch matmul job' if competing else ''}")
    print(f"{'case':<26}{'core ms':>9}{'numpy ms':>10}{'faiss ms':>10}{'Q@P.T ms':>10}"
          f"{'x numpy':>9}{'x faiss':>9}{'of gemm':>9}")
    cases = [(20_000, 128)] if quick else NEAREST_CASES
    for n, d in cases:
        points, queries = make_nearest_data(n, d)
        t = best_times(nearest_methods(points, queries), repeats=20)
        fa = t.get("faiss", float("nan"))
        print(f"{f'nearest 256x{n}x{d}':<26}{t['core']:9.2f}{t['numpy']:10.2f}{fa:10.2f}{t['gemm']:10.2f}"
              f"{t['numpy'] / t['core']:9.2f}{fa / t['core']:9.2f}{t['gemm'] / t['core']:9.2f}")
    values = make_pack_data()
    t = best_times(pack_methods(values), repeats=30)
    print(f"\n{'case':<26}{'core ms':>9}{'numpy ms':>10}{'sum ms':>10}{'x numpy':>9}{'read/core':>10}")
    print(f"{'pack+compare 256x65536':<26}{t['core']:9.2f}{t['numpy']:10.2f}{t['read']:10.2f}"
          f"{t['numpy'] / t['core']:9.2f}{t['read'] / t['core']:10.2f}")
    print("x numpy / x faiss: speed-up of core; of gemm: core throughput as a share of Q @ P.T alone;"
          " read/core: plain read time over pack+compare time (>= 0.67 means within 1.5x of a read).")
    ties = {}
    for kind in ("random", "identical"):
        points, queries = make_tie_data(kind)
        ties[kind] = (best_times({"core": lambda: core.nearest(points, queries)}, repeats=20)["core"],
                      peak_extra_mb(kind))
    print(f"\n{'case':<34}{'core ms':>9}{'peak MB':>9}")
    for kind, (ms, mb) in ties.items():
        print(f"{f'nearest 256x20000x128 {kind}':<34}{ms:9.2f}{mb:9.1f}")
    print(f"identical / random: {ties['identical'][0] / ties['random'][0]:.2f}x the time; peak memory added "
          f"{ties['identical'][1]:.1f} MB vs {ties['random'][1]:.1f} MB (the points themselves: 10.2 MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
