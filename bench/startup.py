"""Benchmark: how long `blindpost` takes to start, warm, in the server environment.

Runs each command as a fresh process several times (after one unmeasured run, so the
page cache and bytecode are warm) and prints the median wall time, the median CPU time,
and their ratios to `python -c pass` with the same interpreter, measured in the same run.
The commands are `blindpost --help`, `blindpost version`, a client command's help
(`keygen --help`) and the everyday admin commands that open the database: `partner list`,
`user list`, `key list`, `files` (the transfer list) and `audit verify` (incremental:
the entries since the last verified checkpoint). Goal: --help and the admin commands
under 0.5 s wall on an idle machine. It also times importing the libraries every admin
command imports (click, SQLAlchemy's engine and ORM) as blindpost does: the floor under
them, which the gateway's own code cannot lower (about two thirds of `partner list`).

"Warm" includes bytecode: an installed wheel has its .pyc files written by pip, while a
source checkout run with PYTHONDONTWRITEBYTECODE (set in some shells and CI images) would
compile every gateway module on every start. So the runs keep their bytecode in a cache
of their own (PYTHONPYCACHEPREFIX, in the scratch directory), filled by the first run.

After the timings it runs each command a few more times under ``python -X importtime``
and prints, per command, the time its imports took (the least of those runs, module by
module) and the packages that took most of it: what a further cut would have to remove.
``-X importtime`` adds its own overhead, so these figures are larger than the share of
the wall time they stand for; compare them with each other, not with the medians.

The data directory holds an installation just initialised with three partners, so the
commands do almost no work: what is timed is start-up (interpreter, imports, opening the
database with its checks and the current-state follow-up of the audit log), not the
command's own work, which grows with the data (e.g. `audit verify` of a long log).

``--compare DIR`` also times another checkout of Blindpost (e.g. the main branch in a
`git worktree`), with the same interpreter and packages, its source first on PYTHONPATH
and its own data directory; the two alternate run by run, so both see the same load.
Every run starts in the scratch directory with each tree's source on PYTHONPATH: `python
-m` puts the working directory first on the path, so a run started in a checkout would
import that checkout whatever PYTHONPATH says.

``--instructions`` also counts the instructions each command executes, once per tree,
under valgrind's cachegrind (about 10 s a command): unlike times on a shared machine, the
count does not move with the load, so small differences between two trees show.

    python bench/startup.py [--runs 15] [--tiny] [--compare DIR] [--instructions]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 0.5
THIS_CHECKOUT = Path(__file__).resolve().parents[1]
# The program as its console script runs it (gateway/cli/__main__.py is the same entry).
BLINDPOST = [sys.executable, "-m", "gateway.cli"]
# (label, arguments, whether the 0.5 s goal applies)
COMMANDS = (
    ("blindpost --help", ["--help"], True),
    ("blindpost version", ["version"], False),
    ("blindpost keygen --help", ["keygen", "--help"], False),
    ("blindpost partner list", ["partner", "list"], True),
    ("blindpost user list", ["user", "list"], True),
    ("blindpost key list", ["key", "list"], True),
    ("blindpost files", ["files"], True),
    ("blindpost audit verify", ["audit", "verify"], True),
)
# Timed like the commands: the interpreter alone, and the interpreter with the libraries
# every admin command imports (click, SQLAlchemy's engine and ORM), the floor under them.
# They are imported as blindpost imports them, with the cyclic collector paused and what
# they made frozen (gateway.cli.collector_paused): a plain import costs more than that.
LIBRARIES = "import gc; gc.disable(); import click, sqlalchemy.orm; gc.freeze(); gc.enable()"
FLOOR = "libraries (click, sqlalchemy.orm)"
REFERENCES: tuple[tuple[str, list[str], bool], ...] = (
    ("python -c pass", [], False), (FLOOR, [], False))
REFERENCES_ARGV = {"python -c pass": [sys.executable, "-c", "pass"],
                   FLOOR: [sys.executable, "-c", LIBRARIES]}
PARTNERS = ("uni-research", "city-hospital", "state-lab")
# Runs under -X importtime per command (the least per module is kept), and how many of
# the packages that took longest to import are printed.
IMPORT_RUNS = 3
TOP_PACKAGES = 6
# Packages shown by their second-level name, where the time is spread over a few parts.
SPLIT_PACKAGES = ("sqlalchemy", "gateway", "cryptography")


class Tree:
    """One checkout to time: its environment (source path, data directory)."""

    def __init__(self, label: str, env: dict[str, str], cwd: Path) -> None:
        self.label = label
        self.env = env
        self.cwd = cwd
        self.walls: dict[str, list[float]] = {}
        self.cpus: dict[str, list[float]] = {}

    def run(self, argv: list[str]) -> tuple[float, float]:
        """Wall and CPU time (user + system) of one run of ``argv``."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL, check=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

    def record(self, label: str, argv: list[str]) -> None:
        wall, cpu = self.run(argv)
        self.walls.setdefault(label, []).append(wall)
        self.cpus.setdefault(label, []).append(cpu)

    def medians(self, label: str) -> tuple[float, float]:
        return statistics.median(self.walls[label]), statistics.median(self.cpus[label])

    def import_times(self, argv: list[str], runs: int) -> dict[str, float]:
        """Seconds each module took to import itself (without the modules it imported)
        in ``argv``, the least over ``runs`` runs under ``-X importtime``."""
        least: dict[str, float] = {}
        for _ in range(runs):
            result = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=self.env,
                                    cwd=self.cwd, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, check=True)
            for line in result.stderr.splitlines():
                # "import time: self [us] | cumulative | imported package"
                if not line.startswith("import time:") or "self [us]" in line:
                    continue
                own, _cumulative, name = line.removeprefix("import time:").split("|")
                module = name.strip()
                least[module] = min(least.get(module, float("inf")), int(own) / 1e6)
        return least

    def instructions(self, argv: list[str]) -> int:
        """Instructions one run of ``argv`` executes, counted by cachegrind."""
        result = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                 "--cachegrind-out-file=/dev/null", *argv], env=self.env,
                                cwd=self.cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, check=True)
        counted = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
        if counted is None:
            raise SystemExit(f"cachegrind reported no count:\n{result.stderr[-2000:]}")
        return int(counted.group(1).replace(",", ""))


def by_package(modules: dict[str, float]) -> collections.Counter[str]:
    """Import seconds per package (the second level for SPLIT_PACKAGES)."""
    totals: collections.Counter[str] = collections.Counter()
    for module, seconds in modules.items():
        parts = module.split(".")
        depth = 2 if parts[0] in SPLIT_PACKAGES else 1
        totals[".".join(parts[:depth])] += seconds
    return totals


def make_tree(label: str, scratch: Path, source: Path) -> Tree:
    """A tree with a fresh, initialised data directory holding a few partners."""
    data_dir = scratch / label / "var"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BLINDPOST_") and k not in ("PYTHONDONTWRITEBYTECODE",
                                                           "PYTHONPATH")}
    # Each tree its own bytecode cache: both sources may hold modules of the same path.
    env.update(BLINDPOST_DATA_DIR=str(data_dir), PYTHONPATH=str(source),
               PYTHONPYCACHEPREFIX=str(scratch / label / "pycache"))
    tree = Tree(label, env, cwd=scratch)
    for extra in (["init", "--admin", "alice"], *(["partner", "add", s] for s in PARTNERS)):
        tree.run([*BLINDPOST, *extra])
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per command")
    parser.add_argument("--tiny", action="store_true",
                        help="one run each, not warmed up (the test suite)")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="also time the checkout in DIR, alternating with this one")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each command's instructions (valgrind)")
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (apt-get install valgrind)")
    runs = 1 if args.tiny else args.runs
    with tempfile.TemporaryDirectory() as scratch:
        trees = [make_tree("this", Path(scratch), THIS_CHECKOUT)]
        if args.compare is not None:
            trees.append(make_tree("compared", Path(scratch), args.compare.resolve()))
        load_before = os.getloadavg()
        for label, extra, _goal in (*REFERENCES, *COMMANDS):
            argv = REFERENCES_ARGV.get(label) or [*BLINDPOST, *extra]
            for tree in trees if not args.tiny else ():
                tree.run(argv)  # warm up: page cache and bytecode
            for _ in range(runs):
                for tree in trees:
                    tree.record(label, argv)
        load_after = os.getloadavg()
        report(trees, runs, load_before, load_after)
        for tree in trees:
            report_imports(tree, 1 if args.tiny else IMPORT_RUNS)
        if args.instructions:
            report_instructions(trees)


def report(trees: list[Tree], runs: int, load_before: tuple[float, float, float],
           load_after: tuple[float, float, float]) -> None:
    """Print one table per tree: medians, ratios to `python -c pass`, the goal's verdict."""
    print(f"medians of {runs} runs; load average (1, 5, 15 min) before "
          f"{' '.join(f'{x:.1f}' for x in load_before)}, after "
          f"{' '.join(f'{x:.1f}' for x in load_after)}; {os.cpu_count()} CPUs")
    for tree in trees:
        reference, reference_cpu = tree.medians("python -c pass")
        source = tree.env.get("PYTHONPATH", "this checkout")
        print(f"\n[{tree.label}: {source}] python -c pass: {reference * 1000:.0f} ms wall, "
              f"{reference_cpu * 1000:.0f} ms CPU")
        floor, floor_cpu = tree.medians(FLOOR)
        print(f"{FLOOR}, the floor of an admin command: {floor * 1000:.0f} ms wall, "
              f"{floor_cpu * 1000:.0f} ms CPU")
        print(f"{'command':<26} {'wall ms':>8} {'x python':>9} {'CPU ms':>7} {'x python':>9}  "
              f"goal (wall)")
        for label, _extra, goal in COMMANDS:
            seconds, cpu = tree.medians(label)
            verdict = ("" if not goal else
                       "ok" if seconds < GOAL_SECONDS else f"over {GOAL_SECONDS} s")
            print(f"{label:<26} {seconds * 1000:8.0f} {seconds / reference:9.1f} "
                  f"{cpu * 1000:7.0f} {cpu / max(reference_cpu, 1e-3):9.1f}  {verdict}")
    if len(trees) == 2:
        print(f"\nCPU ratio {trees[0].label} / {trees[1].label} per command:")
        for label, _extra, _goal in COMMANDS:
            ratio = trees[0].medians(label)[1] / max(trees[1].medians(label)[1], 1e-3)
            print(f"  {label:<26} {ratio:5.2f}")


def report_imports(tree: Tree, runs: int) -> None:
    """Per command: its imports' total under -X importtime and the largest packages."""
    print(f"\n[{tree.label}] imports under -X importtime (least of {runs} runs per module; "
          "the flag's own overhead included)")
    for label, extra, _goal in COMMANDS:
        totals = by_package(tree.import_times([*BLINDPOST, *extra], runs))
        top = ", ".join(f"{name} {seconds * 1000:.0f}"
                        for name, seconds in totals.most_common(TOP_PACKAGES))
        print(f"{label:<26} {sum(totals.values()) * 1000:5.0f} ms: {top}")



def report_instructions(trees: list[Tree]) -> None:
    """Per command and tree: millions of instructions executed, and the ratio of the two."""
    print("\ninstructions executed (millions, cachegrind; one run each, after the timings)")
    floor = trees[0].instructions(REFERENCES_ARGV[FLOOR])
    print(f"{FLOOR}, the floor: {floor / 1e6:.0f}")
    print(f"{'command':<26} " + " ".join(f"{tree.label:>10}" for tree in trees)
          + ("   ratio" if len(trees) == 2 else ""))
    for label, extra, _goal in COMMANDS:
        counts = [tree.instructions([*BLINDPOST, *extra]) for tree in trees]
        ratio = f"   {counts[0] / counts[1]:5.2f}" if len(counts) == 2 else ""
        print(f"{label:<26} " + " ".join(f"{count / 1e6:10.0f}" for count in counts) + ratio)


if __name__ == "__main__":
    main()
