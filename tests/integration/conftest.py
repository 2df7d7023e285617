"""Fixtures of the integration tests that build things once per session."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"


@dataclass(frozen=True)
class Release:
    """A release directory as ``make dist`` writes it."""

    version: str
    directory: Path

    @property
    def wheel(self) -> Path:
        return self.directory / f"blindpost-{self.version}-py3-none-any.whl"


def make_dist(source: Path, target: Path) -> Release:
    """``make dist`` in ``source`` into ``target`` with this checkout's virtual environment
    (``-o``: never reinstall it from ``source``)."""
    installed = [f"-o{VENV / '.installed'}", f"-o{VENV / '.installed-dev'}"]
    result = subprocess.run(["make", "-C", str(source), *installed, "dist", f"VENV={VENV}",
                             f"DIST={target}"], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = target.glob("blindpost-*-py3-none-any.whl")
    return Release(version=wheel.name.split("-")[1], directory=target)


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Release, Release]:
    """Release A, built from this checkout, and release B: the same code one version later
    (its own version and changelog entry), for upgrade and rollback."""
    root = tmp_path_factory.mktemp("releases")
    first = make_dist(REPO, root / "a")
    source = root / "source-b"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others",
                            "--exclude-standard", "-z"], capture_output=True, check=True
                           ).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    later = _next_version(first.version)
    init = source / "gateway" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{first.version}"', f'"{later}"'))
    changelog = source / "CHANGELOG.md"
    text = changelog.read_text()
    heading = f"## {first.version}"
    changelog.write_text(text.replace(heading, f"## {later}\n\nA test release.\n\n{heading}", 1))
    second = make_dist(source, root / "b")
    assert second.version == later
    return first, second


def _next_version(version: str) -> str:
    major, minor, patch = (int(part) for part in re.findall(r"\d+", version)[:3])
    return f"{major}.{minor}.{patch + 1}"
