"""Every benchmark in bench/ runs, at a tiny size, so a change that breaks one fails here.

Each script accepts ``--tiny`` (a size that runs in seconds); `make bench` keeps the full
sizes. The speed itself is the benchmarks' business: this checks only that each runs to
the end and reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
BENCH = Path(__file__).resolve().parents[2] / "bench"
# Modules whose names start with "_" are shared helpers, not benches.
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_every_bench_is_listed() -> None:
    assert {p.name for p in SCRIPTS} >= {"audit.py", "exposure.py", "startup.py", "sftp.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_bench_runs_tiny(script: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")}
    result = subprocess.run([sys.executable, str(script), "--tiny"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, f"{script.name}:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} reported nothing"
