"""bench/clients.py runs at a tiny size, so the benchmark cannot rot between runs of
`make bench` (its figures are not checked here: a test is no place for speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.sftp_server.harness import require_tool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_client_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    require_tool("age")
    require_tool("sftp")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "clients.py"), "--size-mib",
                           "1", "--repeat", "2", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for ours, theirs in (("blindpost send", "age -e -o + sftp put"),
                         ("blindpost fetch", "sftp get + age -d -o"),
                         ("blindpost encrypt -o (disk)", "age -e -o (disk)"),
                         ("blindpost decrypt -o (disk)", "age -d -o (disk)")):
        [line] = [line for line in done.stdout.splitlines()
                  if line.startswith(ours) and f" vs {theirs}" in line]
        assert "(rounds: " in line, line
    assert list(tmp_path.iterdir()) == [], "the scratch directory is removed"


def test_the_client_benchmark_runs_one_part(tmp_path: Path) -> None:
    require_tool("age")
    require_tool("sftp")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "clients.py"), "--tiny",
                           "--parts", "o", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "blindpost send" not in done.stdout
    [line] = [line for line in done.stdout.splitlines()
              if line.startswith("blindpost decrypt -o (disk)") and " vs " in line]
    assert "; CPU " in line, line
    assert "load average (1 min) before each round" in done.stdout
    assert list(tmp_path.iterdir()) == [], "the scratch directory is removed"


def test_the_client_benchmark_measures_the_program_it_is_given(tmp_path: Path) -> None:
    require_tool("age")
    require_tool("sftp")
    # A program that notes each command it runs, then runs this checkout's blindpost.
    calls = tmp_path / "calls"
    program = tmp_path / "blindpost"
    program.write_text(f'#!/bin/sh\necho "$1" >> {calls}\n'
                       f'exec {ROOT / ".venv" / "bin" / "blindpost"} "$@"\n')
    program.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "clients.py"), "--tiny",
                           "--parts", "o", "--dir", str(scratch), "--blindpost", str(program)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"clients {program}" in done.stdout
    assert calls.read_text().split() == ["encrypt", "decrypt"]
    refused = subprocess.run([sys.executable, str(ROOT / "bench" / "clients.py"), "--tiny",
                              "--blindpost", str(tmp_path / "missing")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "not an executable program" in refused.stderr
