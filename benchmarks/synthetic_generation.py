"""How long the synthetic world takes to log a million plays, and how much memory it needs.

    python benchmarks/synthetic_generation.py [--plays 1000000] [--seed 0] [--repeats 3]

Times building the world, then `generate` (simulation plus the `datasets.Dataset`), then `save_log` to Parquet, each
the best of `--repeats` runs; then one more run of `generate` under tracemalloc for its peak traced memory (Python and
numpy allocations; Arrow buffers are not traced). The process's peak resident memory (getrusage) is reported last.
Prints a markdown table; the figures in benchmarks/README.md come from it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
import tracemalloc

from amrs_hf.data import save_log
from amrs_hf.data.synthetic import SyntheticWorld


def best_of(repeats: int, run):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plays", type=int, default=1_000_000, help="plays to generate (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="world and sampling seed (default 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per step; the best is reported")
    args = parser.parse_args(argv)

    build_s, world = best_of(args.repeats, lambda: SyntheticWorld(seed=args.seed))
    generate_s, log = best_of(args.repeats, lambda: world.generate(args.plays))
    with tempfile.TemporaryDirectory() as folder:
        save_s, _ = best_of(args.repeats, lambda: save_log(log, folder))
        parquet_mb = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 2**20
    del log
    tracemalloc.start()
    world.generate(args.plays)
    traced_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

    machine = platform.processor() or platform.machine()
    print(f"{args.plays:,} plays, seed {args.seed}, best of {args.repeats}; {machine}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| build the world (catalogue, listeners, policy) | {build_s:.2f} |")
    print(f"| generate {args.plays:,} plays + build the Dataset | {generate_s:.2f} |")
    print(f"| save_log to Parquet ({parquet_mb:.0f} MiB) | {save_s:.2f} |")
    print()
    print("| memory | MiB |")
    print("|---|---|")
    print(f"| peak traced by tracemalloc during generate | {traced_peak_mb:.0f} |")
    print(f"| peak resident set of the process (getrusage maxrss) | {maxrss_mb:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
