"""Benchmark: how long `blindpost` takes to start, warm, in the server environment.

Runs each command as a fresh process several times (after one unmeasured run, so the
page cache and bytecode are warm) and prints the median wall time and its ratio to
`python -c pass` with the same interpreter, measured in the same run. The commands are
`blindpost --help`, `blindpost version`, a client command's help (`keygen --help`) and an
admin command that opens the database (`partner list`, on a fresh data directory).
Goal: --help and the admin command under 0.5 s.

    python bench/startup.py [--runs 15] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 0.5
BLINDPOST = [sys.executable, "-c",
             "import sys; from gateway.cli import main; main(sys.argv[1:], prog_name='blindpost')"]


def median_seconds(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of ``argv``'s runs.

    The CPU time is what the command costs on a machine others share; the wall time is
    what an administrator waits on an idle one.
    """
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)  # warm up
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per command")
    parser.add_argument("--tiny", action="store_true", help="one run each (the test suite)")
    args = parser.parse_args()
    runs = 1 if args.tiny else args.runs
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "var"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
               "BLINDPOST_DATA_DIR": str(data_dir)}
        subprocess.run([*BLINDPOST, "init", "--admin", "alice"], env=env,
                       stdout=subprocess.DEVNULL, check=True)
        reference, reference_cpu = median_seconds([sys.executable, "-c", "pass"], env, runs)
        print(f"python -c pass: {reference * 1000:.0f} ms wall, {reference_cpu * 1000:.0f} ms "
              f"CPU (medians of {runs}); load average {os.getloadavg()[0]:.1f}")
        print(f"{'command':<26} {'wall ms':>8} {'x python':>9} {'CPU ms':>7} {'x python':>9}  "
              f"goal (wall)")
        for label, extra, goal in (("blindpost --help", ["--help"], True),
                                   ("blindpost version", ["version"], False),
                                   ("blindpost keygen --help", ["keygen", "--help"], False),
                                   ("blindpost partner list", ["partner", "list"], True)):
            seconds, cpu = median_seconds([*BLINDPOST, *extra], env, runs)
            verdict = ("" if not goal else
                       "ok" if seconds < GOAL_SECONDS else f"over {GOAL_SECONDS} s")
            print(f"{label:<26} {seconds * 1000:8.0f} {seconds / reference:9.1f} "
                  f"{cpu * 1000:7.0f} {cpu / max(reference_cpu, 1e-3):9.1f}  {verdict}")


if __name__ == "__main__":
    main()
