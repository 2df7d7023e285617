"""bench/payload_check.py at a tiny size, so that it cannot rot: both parts run, the
OpenSSH reference and both Blindpost servers take the upload, and the report has its
figures (the ratios themselves are measured by `make bench`, not judged here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.sftp_server.harness import require_tool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_payload_check_benchmark_runs_at_a_tiny_size() -> None:
    require_tool("sshd")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/payload_check.py"), "--repeat", "1",
         "--sizes-mib", "0.1,1", "--sftp-mib", "2", "--rounds", "1", "--workers", "1"],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^ +1 MiB +[\d.]+ +[\d.]+ +[\d.]+ ", result.stdout, re.MULTILINE)
    for line in ("upload ratio Blindpost/OpenSSH with the check:",
                 "upload ratio Blindpost/OpenSSH without the check:", "with / without"):
        assert line in result.stdout, result.stdout
