"""bench/audit.py and bench/exposure.py run at a tiny size, so neither can rot.

The full sizes (a million entries) run with ``make bench``; here each script builds a
log of a few thousand entries and goes through every step it measures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _bench(script: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--tiny"],
                            capture_output=True, text=True, timeout=240, check=False,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_audit_bench_runs() -> None:
    output = _bench("audit.py")
    assert "bulk build of 3,000 entries" in output
    assert "full verification, in its own process:" in output
    assert "incremental verification of 100 new entries after 3,000" in output
    assert "console page in the middle of the log: " in output


def test_the_exposure_bench_runs() -> None:
    output = _bench("exposure.py")
    for label in ("reference: verification alone", "exposure, one week (text)",
                  "exposure, whole history (text)", "exposure, whole history (json)"):
        assert f"{label}: " in output
