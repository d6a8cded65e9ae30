"""Benchmark: replay a full year of three hourly traces with about 100,000 tasks.

Runs `carbon-scheduler replay` in a child process, as a user would, and reports
its wall time, the peak resident memory of the largest process it started
(the parent or one of its policy workers), and the summary's figures.

    python3 benchmarks/replay_year.py [TRACE] [--tasks-per-hour 12] [--jobs N]

TRACE defaults to the repository's synthetic `traces/demo.csv` (one year). A
longer trace is cut to its first year by `--days 365`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", nargs="?", default=str(ROOT / "traces" / "demo.csv"))
    parser.add_argument("--tasks-per-hour", type=float, default=12.0)
    parser.add_argument("--regions", default=str(ROOT / "benchmarks" / "regions-large.toml"))
    parser.add_argument("--jobs", type=int)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "carbon_scheduler.cli", "replay", args.trace,
            "--regions", args.regions, "--days", "365", "--tasks-per-hour", str(args.tasks_per_hour),
            "--out", out, "--quiet",
        ]
        if args.jobs is not None:
            command += ["--jobs", str(args.jobs)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        # ru_maxrss of RUSAGE_CHILDREN is the largest peak of any waited-for
        # descendant, in kilobytes on Linux.
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = json.loads((Path(out) / "summary.json").read_text())

    print(f"trace: {args.trace}")
    print(f"tasks: {summary['tasks']}")
    print(f"wall time: {wall:.1f} s")
    print(f"peak memory of one process: {peak_mb:.0f} MB")
    print(f"saving against baseline: {summary['saving_percent']:.1f} %")
    print(f"oracle fraction: {summary['oracle_fraction']:.3f}")
    print(f"deadline misses: {summary['deadline_misses']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
