"""`blindpost --help` and the admin commands start without what they do not use.

The speed itself is measured by bench/startup.py; these tests hold the means: the command
list is printed from SUMMARIES (each the command's own short help), and neither `--help`
nor an admin command that reads the database imports the web, SSH or S3 libraries, nor
what only another command needs. They check what is imported, never how long it takes,
so an import that creeps back fails here on any machine, loaded or not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gateway.cli.program import COMMANDS, SUMMARIES, main

HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "paramiko", "boto3",
         "botocore", "webauthn", "argon2", "jinja2", "segno", "rfc8785", "psycopg", "numpy")


# What no admin command that only reads needs: the adapters' libraries, migrations, the
# dialect package of the database not in use (these tests run on SQLite), the notification
# sender (SMTP, HTTP). Modules and packages, matched with everything under them.
NOT_FOR_ADMIN_COMMANDS = ("fastapi", "starlette", "uvicorn", "paramiko", "boto3", "botocore",
                          "webauthn", "jinja2", "segno", "alembic", "numpy",
                          "sqlalchemy.dialects.postgresql", "psycopg",
                          "gateway.notify.delivery", "smtplib")
# Besides those, what each command has no use for (sign-in hashing and one-time codes,
# the age format, the upload checks, the witness client).
NOT_FOR = {
    ("partner", "list"): ("argon2", "pyotp", "gateway.envelope", "gateway.accounts",
                          "gateway.transfers", "gateway.witness", "http.client"),
    ("user", "list"): ("gateway.transfers", "gateway.witness", "http.client"),
    ("files",): ("argon2", "pyotp", "gateway.accounts", "gateway.auth", "gateway.witness",
                 "http.client"),
    ("key", "list"): ("argon2", "pyotp", "gateway.accounts", "gateway.transfers",
                      "gateway.witness", "http.client", "gateway.cli.crypto",
                      "gateway.client"),
    ("audit", "verify"): ("argon2", "pyotp", "gateway.envelope", "gateway.accounts",
                          "gateway.transfers", "gateway.audit.witnessing", "http.client"),
}


def _imported(*argv: str, env: dict[str, str] | None = None) -> set[str]:
    """Every module imported by ``blindpost ARGV`` in a fresh interpreter, by full name."""
    probe = ("import sys, json, atexit\n"
             "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
             "from gateway.cli.program import main\n"
             f"main({list(argv)!r}, prog_name='blindpost')\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def _top_level(modules: set[str]) -> set[str]:
    return {module.partition(".")[0] for module in modules}


def _under(modules: set[str], names: tuple[str, ...]) -> set[str]:
    """The modules in ``modules`` that are one of ``names`` or inside one of them."""
    return {m for m in modules if m in names or m.startswith(tuple(f"{n}." for n in names))}


def test_every_command_is_listed_with_its_own_summary() -> None:
    ctx = click.Context(main, info_name="blindpost")
    assert set(SUMMARIES) == set(COMMANDS)
    for name, summary in SUMMARIES.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert summary == command.get_short_help_str(limit=1000), name


def test_help_imports_no_server_library() -> None:
    assert _top_level(_imported("--help")).isdisjoint(HEAVY)


@pytest.mark.parametrize("argv", list(NOT_FOR), ids=" ".join)
def test_an_admin_command_imports_only_what_it_uses(argv: tuple[str, ...],
                                                   data_dir: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "BLINDPOST_DATA_DIR": str(data_dir)}
    modules = _imported(*argv, env=env)
    # It did open the database, with the checks every command makes on opening it.
    assert {"sqlalchemy", "gateway.db.models", "gateway.integrity", "gateway.ledger"} <= modules
    assert _under(modules, NOT_FOR_ADMIN_COMMANDS + NOT_FOR[argv]) == set()


def _collector_at_exit(entry: str, data_dir: Path) -> str:
    """``enabled frozen`` of the collector when ``blindpost partner list`` run via
    ``entry`` ends, in a fresh interpreter."""
    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: print(gc.isenabled(), gc.get_freeze_count() > 0, "
             "file=sys.stderr))\n"
             "sys.argv = ['blindpost', 'partner', 'list']\n"
             f"from gateway.cli{'' if entry == 'run' else '.program'} import {entry}\n"
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
