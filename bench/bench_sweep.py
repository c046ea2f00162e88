"""A sweep on the face DCGAN vs the same rows another way: 2 embedded workers vs 1, and vs separate CLI calls.

    python bench/bench_sweep.py [--queries 16] [--n 300] [--cli-rows 8] [--ways cli,reports,sweep2,sweep1]

The grid: layers main.2, main.5 x keeps 0.05, 0.1 x `--queries` query seeds, `--n` tree nodes per row (default: the
64-row sweep of the issue). Each way runs as a user runs it, in a fresh process (start-up included):
    sweep, 2 workers    egbas sweep --model faces ... --workers 2
    sweep, 1 worker     egbas sweep --model faces ... --workers 1
    CLI calls           egbas explore --checkpoint FACES --layer L --keep K --query-seed Q --n N, one call per row,
                        one after another (what a user scripts today; each call also writes its report). Only
                        `--cli-rows` rows are run: every (layer, keep) with the same queries, spread over the
                        range; the figure is rows per second.
    sweep + reports     egbas sweep ... --reports --workers 2 on the CLI's rows: like for like with the CLI calls
For each: wall seconds, rows per second, CPU seconds per row (user + sys of the child processes: what the way costs
whatever else runs on the machine) and the load average around it. The 2- and 1-worker sweeps must give the same
table (apart from timings): checked. The machine may be shared: the numbers say how loaded it was.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS = ("main.2", "main.5")
KEEPS = (0.05, 0.1)


def run(argv):
    """Run a command; returns (wall seconds, CPU seconds of the children, load average before, after)."""
    load0 = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, load0, os.getloadavg()[0]


def egbas(*args):
    return [sys.executable, "-m", "egbas_fast.cli", *map(str, args)]


WAYS = ("cli", "reports", "sweep2", "sweep1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--cli-rows", type=int, default=8, help="a multiple of the (layer, keep) cells: each as often")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"a subset of {','.join(WAYS)}")
    args = parser.parse_args()
    ways = args.ways.split(",")
    cells = len(LAYERS) * len(KEEPS)
    if not set(ways) <= set(WAYS) or args.cli_rows <= 0 or args.cli_rows % cells:
        parser.error(f"--ways must be a subset of {','.join(WAYS)} and --cli-rows a positive multiple of {cells}")

    import egbas_fast as eg
    from egbas_fast.sweeps import TIMING_COLUMNS, read_table

    rows = len(LAYERS) * len(KEEPS) * args.queries
    grid = ["--layers", ",".join(LAYERS), "--keeps", ",".join(map(str, KEEPS)), "--n", args.n, "--quiet"]
    # the CLI's rows: every (layer, keep) cell of the grid (its rows cost 1x-4x each other's) with the same
    # cli_rows / cells queries spread over the range, so that their rows per second compare with the whole sweep's
    cli_queries = [j * args.queries // (args.cli_rows // cells) for j in range(args.cli_rows // cells)]
    print(f"{rows} rows (face DCGAN, {len(LAYERS)} layers x {len(KEEPS)} keeps x {args.queries} queries, "
          f"n={args.n}); CLI rows: queries {cli_queries} in every cell; {os.cpu_count()} CPUs; load average at "
          f"start {os.getloadavg()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        checkpoint = eg.save_checkpoint(tmp / "faces", eg.zoo.face_dcgan())
        if "cli" in ways:
            cli = [run(egbas("explore", "--checkpoint", checkpoint, "--layer", layer, "--keep", keep,
                             "--query-seed", q, "--n", args.n, "--out", tmp / f"cli-{layer}-{keep}-{q}"))
                   for q in cli_queries for layer in LAYERS for keep in KEEPS]
            results["CLI calls (one per row)"] = (len(cli), sum(c[0] for c in cli), sum(c[1] for c in cli),
                                                  cli[0][2], cli[-1][3])
        if "reports" in ways:  # like for like: the CLI's rows, each writing its report as a CLI call does
            results["sweep + reports, 2 workers"] = (args.cli_rows, *run(egbas(
                "sweep", "--model", "faces", *grid, "--queries", ",".join(map(str, cli_queries)), "--reports",
                "--workers", 2, "--out", tmp / "sweep-reports")))
        for workers in (2, 1):
            if f"sweep{workers}" in ways:
                results[f"sweep, {workers} worker{'s' * (workers > 1)}"] = (rows, *run(egbas(
                    "sweep", "--model", "faces", *grid, "--queries", f"0-{args.queries - 1}", "--workers", workers,
                    "--out", tmp / f"sweep-{workers}")))
        if "sweep2" in ways and "sweep1" in ways:
            tables = [read_table(tmp / f"sweep-{w}").drop_columns(list(TIMING_COLUMNS)).sort_by(
                [("layer", "ascending"), ("keep", "ascending"), ("query_seed", "ascending")]) for w in (2, 1)]
            assert tables[0].num_rows == rows and tables[0].equals(tables[1]), "2 and 1 workers gave other tables"
            print(f"the 2- and 1-worker tables are identical apart from timings "
                  f"({tables[0].column('status').to_pylist().count('failed')} failed rows)")

    print(f"\n{'way':<28}{'rows':>6}{'wall s':>9}{'rows/s':>9}{'CPU s/row':>11}{'load before-after':>20}")
    rate = {}
    for name, (n_rows, wall, cpu, load0, load1) in results.items():
        rate[name] = n_rows / wall
        print(f"{name:<28}{n_rows:>6}{wall:>9.1f}{rate[name]:>9.3f}{cpu / n_rows:>11.2f}{load0:>11.1f} -{load1:>6.1f}")
    ratios = [("sweep, 2 workers", "sweep, 1 worker", " (target >= 1.7x)"),
              ("sweep, 2 workers", "CLI calls (one per row)", " (target >= 3x)"),
              ("sweep + reports, 2 workers", "CLI calls (one per row)", " (both write every row's report)")]
    for a, b, why in ratios:
        if a in rate and b in rate:
            print(f"{a} / {b}: {rate[a] / rate[b]:.2f}x rows/s{why}")


if __name__ == "__main__":
    main()
