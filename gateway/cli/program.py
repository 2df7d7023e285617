"""The ``blindpost`` program's commands (click): the group and how it finds its commands.

Subcommands are imported only when they run, so ``blindpost decrypt`` on a partner's
laptop starts without loading the database layer. ``pip install blindpost`` installs
the client commands only (``keygen``, ``encrypt``, ``decrypt``, ``key fingerprint``,
``send``, ``fetch``, ``trust``, ``portal-code``, ``witness``); the gateway's commands
need the ``server`` extra, and say so when it is missing. The program starts in
:func:`gateway.cli.run`.
"""

from __future__ import annotations

import functools
import gc
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from gateway import __version__
from gateway.cli import exit_at_once
from gateway.cli.errors import CommandError, exit_with, from_os_error
from gateway.errors import GatewayError

# The context key under which the top-level --data-dir reaches subcommands.
DATA_DIR_KEY = "blindpost.data_dir"

# Command name -> "module:attribute". Adapters add theirs (e.g. `sftp`) through the
# `blindpost.commands` entry point group, so that gateway never imports them.
COMMANDS = {
    "init": "gateway.cli.admin:init",
    "serve": "gateway.cli.admin:serve",
    "purge": "gateway.cli.admin:purge",
    "host-key": "gateway.cli.admin:host_key",
    "db": "gateway.cli.admin:db",
    "version": "gateway.cli.program:version",
    "partner": "gateway.cli.partners:partner",
    "user": "gateway.cli.users:user",
    "source": "gateway.cli.sources:source",
    "key": "gateway.cli.keys:key",
    "audit": "gateway.cli.audit:audit",
    "integrity": "gateway.cli.integrity:integrity",
    "state-key": "gateway.cli.integrity:state_key",
    "token": "gateway.cli.tokens:token",
    "exposure": "gateway.cli.exposure:exposure",
    "files": "gateway.cli.files:files",
    "keygen": "gateway.cli.crypto:keygen",
    "encrypt": "gateway.cli.crypto:encrypt",
    "decrypt": "gateway.cli.crypto:decrypt",
    "send": "gateway.cli.client:send",
    "fetch": "gateway.cli.client:fetch",
    "trust": "gateway.cli.client:trust",
    "portal-code": "gateway.cli.client:portal_code",
    "witness": "gateway.cli.witness:witness",
    "agreement": "gateway.cli.agreements:agreement",
}

# What `blindpost --help` lists for each command: its short help, kept here so that the
# listing imports none of the commands (tests/unit/gateway/cli/test_startup.py checks that
# each is what the command itself says). Adapters' commands are loaded to list them.
SUMMARIES = {
    "agreement": ("Data-sharing agreements: the columns a partner may receive, checked at "
                  "every upload."),
    "audit": "Tamper-evident audit log: verify, checkpoint, prove, read, export.",
    "db": "Database maintenance.",
    "decrypt": "Decrypt the age file INPUT (default: standard input), binary or armored.",
    "encrypt": "Encrypt INPUT (default: standard input) to age recipients.",
    "exposure": "Report every file on the server at any moment of a window, from the audit log.",
    "fetch": "Download what is new in your inbox, verify it and decrypt it into --out.",
    "files": ("List files, newest first, with partner, name, size, uploader, times, downloads "
              "and state."),
    "host-key": "Print the SFTP server's host key and fingerprint, for partners to pin.",
    "init": "Create a data directory: keys, configuration, database and the first admin.",
    "integrity": "Check that every granting row was written by the gateway (its seal verifies).",
    "key": ("Partner encryption keys: propose, approve (by a second admin), revoke, list; and "
            "the fingerprint of a key, anywhere."),
    "keygen": ("Generate an identity (private key); show its recipient (public key) and "
               "fingerprint."),
    "partner": "Manage partners (the organisations that receive files).",
    "portal-code": "Get the one-time code your first portal passkey takes.",
    "purge": "Purge expired files and sweep leftovers of interrupted uploads, once.",
    "send": "Encrypt FILEs on this machine to PARTNER's keys and upload them as FILE.age.",
    "serve": ("Run the gateway until interrupted: the SFTP server, the console and the purger "
              "(every installed service)."),
    "source": "Source addresses slowed down after many failed sign-ins (see docs/security.md).",
    "state-key": "The host's state key (keys/state_key): seals, TOTP secrets, audit entry MACs.",
    "token": "API tokens for /api/v1: create (shown once), list, revoke.",
    "trust": "Accept PARTNER's changed keys, after showing what changed and asking.",
    "user": "Manage accounts: admins, auditors, staff and partner users.",
    "version": "Print the Blindpost version.",
    "witness": "A transparency-log witness (c2sp.org/tlog-witness) for Blindpost audit logs.",
}

# Commands that convert files and nothing else. Their modules never log, so they start
# without setting up (or importing) the logging package (tests/unit/gateway/cli/
# test_crypto_startup.py checks they import none); and once one has succeeded, with its
# output closed (and renamed into place), nothing is left for the interpreter's teardown
# to do, so the program ends at once (:func:`gateway.cli.exit_at_once`).
SILENT_COMMANDS = frozenset({"keygen", "encrypt", "decrypt"})

# Top-level modules of the `server` extra (pyproject.toml). Missing one means a client-only
# install: the command that needs it says which extra to install.
SERVER_EXTRA_MODULES = frozenset({
    "sqlalchemy", "alembic", "psycopg", "pyotp", "argon2", "segno", "rfc8785", "fastapi",
    "uvicorn", "jinja2", "multipart", "boto3", "prometheus_client", "webauthn", "numpy",
})
SERVER_EXTRA_HINT = "pip install 'blindpost[server]'"

# Set by run(): this process is the `blindpost` program itself, not a caller of main().
_OWN_PROCESS = False
# Set by main() in the program's own process when the command is one of SILENT_COMMANDS.
_SILENT_COMMAND = False


def missing_server_module(exc: ModuleNotFoundError) -> str | None:
    """The server-extra module whose absence ``exc`` reports, if that is what it is."""
    top = (exc.name or "").partition(".")[0]
    return top if top in SERVER_EXTRA_MODULES else None


def _server_extra_message(command: str, module: str) -> str:
    return (f"`blindpost {command}` runs the gateway and needs its server dependencies, "
            f"which this installation lacks (no module {module!r}); install them with: "
            f"{SERVER_EXTRA_HINT}")


def _needs_server_extra(name: str, module: str) -> click.Command:
    """A stand-in for a server command on a client-only install."""
    message = _server_extra_message(name, module)

    def refuse() -> NoReturn:
        exit_with(CommandError(message))

    return click.Command(name, callback=refuse, help=message,
                         short_help=f"(needs {SERVER_EXTRA_HINT})", add_help_option=False,
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    import importlib.util  # Only --help asks; a command starts without it.

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Load a command's modules without the cyclic garbage collector, then freeze them.

    Importing the database layer makes some 300,000 objects that live until the process
    ends; the collector would walk them over and over while they load, and all of them
    once more at exit: together about 0.3 s of an admin command's 0.8 s start. In the
    program's own process it is paused while they load, and what they made is then left
    out of every later collection (``gc.freeze``); what the command itself allocates is
    collected as usual, also in a long-running ``serve``. A caller of :func:`main` (the
    tests) keeps its collector as it was. Commands that import the database layer only
    when they run (``key``, ``audit``) load it the same way, in ``open_app``.
    """
    if not _OWN_PROCESS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


@functools.cache
def _plugin_commands() -> dict[str, str]:
    # Imported here: importlib.metadata takes longer to load than a client command's own
    # modules, and the commands in COMMANDS never need it. Cached: each call reads every
    # installed distribution's metadata, and `--help` asks three times.
    from importlib.metadata import entry_points

    return {entry.name: entry.value for entry in entry_points(group="blindpost.commands")}


class BlindpostGroup(click.Group):
    """Loads subcommands on demand and turns a :class:`GatewayError` into an exit code."""

    def list_commands(self, _ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *_plugin_commands()})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, without importing every command's module."""
        names = sorted({*COMMANDS, *_plugin_commands()})
        # As click's own listing: what fits beside the longest name.
        limit = formatter.width - 6 - max(map(len, names))
        # On a client-only install each command is looked up, so that those needing the
        # server extra show the hint instead of what they would do.
        server = _installed("sqlalchemy")
        rows = []
        for name in names:
            if name in SUMMARIES and server:
                # A stand-in command shortens the text exactly as the real one would.
                summary = click.Command(name, help=SUMMARIES[name]).get_short_help_str(limit)
            else:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                summary = command.get_short_help_str(limit)
            rows.append((name, summary))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, _ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name) or _plugin_commands().get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        try:
            with collector_paused():
                command = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:
            missing = missing_server_module(exc)
            if missing is None:
                raise
            return _needs_server_extra(cmd_name, missing)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatewayError as exc:
            exit_with(exc)
        except OSError as exc:
            exit_with(from_os_error(exc))
        except ModuleNotFoundError as exc:
            # A subcommand (e.g. `key propose`) reached for the server's dependencies.
            missing = missing_server_module(exc)
            if missing is None:
                raise
            name = f"{ctx.invoked_subcommand} …" if ctx.invoked_subcommand else "…"
            exit_with(CommandError(_server_extra_message(name, missing)))


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
    global _SILENT_COMMAND  # noqa: PLW0603  # Read by run() once the command is done.
    _SILENT_COMMAND = _OWN_PROCESS and ctx.invoked_subcommand in SILENT_COMMANDS
    if not _SILENT_COMMAND:
        import logging

        logging.basicConfig(level=logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
    ctx.meta[DATA_DIR_KEY] = data_dir
    # Whatever this process writes (database, keys, output files) is private by default.
    os.umask(0o077)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def version(as_json: bool) -> None:
    """Print the Blindpost version.

    \b
    Example:
      blindpost version --json
    """
    import json

    click.echo(json.dumps({"version": __version__}, indent=2) if as_json
               else f"blindpost {__version__}")


def run() -> None:
    """Run the program in this process (from :func:`gateway.cli.run`)."""
    global _OWN_PROCESS  # noqa: PLW0603  # Once, before anything is imported for a command.
    _OWN_PROCESS = True
    try:
        main(prog_name="blindpost")
    except SystemExit as exc:
        if exc.code in (0, None) and _SILENT_COMMAND:
            exit_at_once()
        raise
