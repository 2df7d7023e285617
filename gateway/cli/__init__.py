"""The ``blindpost`` command line: one program for operators, staff, partners and auditors.

Exit codes: 0 success, 1 the operation failed, 2 usage error.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from gateway import __version__
from gateway.cli.common import DATA_DIR_KEY
from gateway.errors import GatewayError, UsageError


class BlindpostGroup(click.Group):
    """Turns every :class:`GatewayError` into one clear line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            click.echo(f"blindpost: error: {exc.diagnostics()}", err=True)
            sys.exit(2 if isinstance(exc, UsageError) else 1)


@click.group(cls=BlindpostGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="blindpost")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Data directory for every subcommand (default: $BLINDPOST_DATA_DIR or ./var).")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """Blindpost: secure file transfer where a server compromise yields only ciphertext.

    \b
    Start here:
      blindpost init --admin alice      create ./var with keys, database and first admin
      blindpost serve                   run the gateway on the embedded defaults
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.meta[DATA_DIR_KEY] = data_dir
    # Whatever this process writes (database, keys, output files) is private by default.
    os.umask(0o077)


def _register() -> None:
    from gateway.cli import admin, keys, partners, users

    for command in (admin.init, admin.serve, admin.purge, admin.db, admin.version,
                    partners.partner, users.user, keys.key):
        main.add_command(command)
    # TEMPORARY-WIP
    try:
        from gateway.cli import crypto
        for c in (crypto.keygen, crypto.encrypt, crypto.decrypt):
            main.add_command(c)
    except ImportError:
        pass
    try:
        from gateway.cli import audit
        main.add_command(audit.audit)
    except ImportError:
        pass
    # Adapters add their own commands (e.g. `blindpost sftp`) through entry points, so
    # that gateway never imports them (the dependency rule).
    for entry in entry_points(group="blindpost.commands"):
        try:
            main.add_command(entry.load(), entry.name)
        except ImportError:
            pass


_register()
