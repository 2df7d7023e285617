"""`blindpost --help` and the admin commands start without what they do not use.

The speed itself is measured by bench/startup.py; these tests hold the means: the command
list is printed from SUMMARIES (each the command's own short help), and neither `--help`
nor an admin command that reads the database imports the web, SSH or S3 libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gateway.cli import COMMANDS, SUMMARIES, main

HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "paramiko", "boto3",
         "botocore", "webauthn", "argon2", "jinja2", "segno", "rfc8785", "psycopg")


def _imported(*argv: str, env: dict[str, str] | None = None) -> set[str]:
    """Top-level modules imported by ``blindpost ARGV`` in a fresh interpreter."""
    probe = ("import sys, json, atexit\n"
             "atexit.register(lambda: print(json.dumps(sorted({m.partition('.')[0] for m in "
             "sys.modules})), file=sys.stderr))\n"
             "from gateway.cli import main\n"
             f"main({list(argv)!r}, prog_name='blindpost')\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def test_every_command_is_listed_with_its_own_summary() -> None:
    ctx = click.Context(main, info_name="blindpost")
    assert set(SUMMARIES) == set(COMMANDS)
    for name, summary in SUMMARIES.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert summary == command.get_short_help_str(limit=1000), name


def test_help_imports_no_server_library() -> None:
    assert _imported("--help").isdisjoint(HEAVY)


def test_an_admin_command_imports_only_the_database_layer(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PATH": "/usr/bin:/bin", "BLINDPOST_DATA_DIR": str(data_dir)}
    modules = _imported("partner", "list", env=env)
    assert "sqlalchemy" in modules
    assert not modules & {"fastapi", "starlette", "uvicorn", "paramiko", "boto3",
                           "webauthn", "argon2", "jinja2", "segno", "alembic"}


def _collector_at_exit(entry: str, data_dir: Path) -> str:
    """``enabled frozen`` of the collector when ``blindpost partner list`` run via
    ``entry`` ends, in a fresh interpreter."""
    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: print(gc.isenabled(), gc.get_freeze_count() > 0, "
             "file=sys.stderr))\n"
             "sys.argv = ['blindpost', 'partner', 'list']\n"
             f"from gateway.cli import {entry}\n"
             f"{entry}()\n")
    env = {"PATH": "/usr/bin:/bin", "BLINDPOST_DATA_DIR": str(data_dir)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_the_program_freezes_what_a_command_imports(data_dir: Path) -> None:
    # The program (console script, python -m gateway.cli) leaves the import-time objects
    # out of later collections and collects again afterwards; a caller of main() keeps
    # its collector as it was.
    assert _collector_at_exit("run", data_dir) == "True True"
    assert _collector_at_exit("main", data_dir) == "True False"
