"""Shared pieces of the ``blindpost`` commands: options, opening the app, output, errors."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.cli.errors import fail
from gateway.cli.program import DATA_DIR_KEY, collector_paused
from gateway.config import CONFIG_FILE_NAME, Settings, data_dir_origin, load_settings
from gateway.errors import AuthenticationError, UsageError
from gateway.values import jsonable

if TYPE_CHECKING:
    # The client commands share this module; the server's (database) layer is imported
    # only by the commands that open an installation.
    from gateway.actors import Actor
    from gateway.app import App
    from gateway.consequences import Consequence

data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Data directory (default: $BLINDPOST_DATA_DIR or ./var).")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON instead of a table.")


def data_dir_flag(data_dir: Path | None) -> Path | None:
    """The command's ``--data-dir``, else the top-level one."""
    if data_dir is None:
        ctx = click.get_current_context(silent=True)
        data_dir = ctx.meta.get(DATA_DIR_KEY) if ctx else None
    return data_dir


def settings_for(data_dir: Path | None) -> Settings:
    """Settings for the command's ``--data-dir``, else the top-level one, else the default."""
    return load_settings(data_dir=data_dir_flag(data_dir))


def describe_data_dir(settings: Settings, data_dir: Path | None) -> str:
    """The data directory's absolute path and the setting that chose it, for messages."""
    origin = data_dir_origin(data_dir=data_dir_flag(data_dir))
    return f"{settings.data_dir.absolute()} (chosen by {origin})"


def open_app(data_dir: Path | None) -> App:
    """Open an initialised installation, or fail with a hint to run ``blindpost init``."""
    # Imported here: the client commands share this module and must not need the
    # server's dependencies (the database layer) to start.
    with collector_paused():
        from sqlalchemy.orm import configure_mappers

        from gateway.app import App

        # What the first query would do: the mappers' configuration also lives until
        # the process ends, so it is made with the collector paused like the imports.
        configure_mappers()

    settings = settings_for(data_dir)
    if not settings.keys_dir.is_dir() or not (settings.data_dir / CONFIG_FILE_NAME).is_file():
        fail(f"{describe_data_dir(settings, data_dir)} is not an initialised data directory; "
             "run `blindpost init` there, or point --data-dir or BLINDPOST_DATA_DIR at "
             "yours")
    app = App(settings)
    app.check_ready()
    return app


def emit_json(obj: object) -> None:
    """Print ``obj`` (a service value, or lists and dicts of them) as indented JSON."""
    click.echo(json.dumps(jsonable(obj), indent=2))


def operator() -> Actor:
    """The person at this shell: administers, but is no account."""
    from gateway.actors import Actor

    return Actor.local_operator()


by_option = click.option("--by", "by", required=True, metavar="ADMIN",
                         help="The admin acting; their current one-time code is asked for "
                              "(on the terminal, or one line on standard input).")


def prove(app: App, username: str, *, purpose: str) -> Actor:
    """``username`` as the actor, once the person at this shell typed their current code.

    On a terminal the code is asked for without echo; otherwise one line is read from
    standard input, so scripts can pipe it from an authenticator's command line.
    """
    if sys.stdin.isatty():
        code = click.prompt(f"One-time code for {username}", hide_input=True, err=True,
                            default="", show_default=False)
    else:
        code = sys.stdin.readline().strip()
    local = operator()
    try:
        return app.auth.prove(username=username, code=code, source="local", purpose=purpose,
                              client="blindpost-cli", os_user=local.os_user)
    except AuthenticationError as exc:
        if code:
            raise
        raise UsageError(f"{purpose} needs {username}'s current one-time code: type it on "
                         "the terminal or give it as one line on standard input") from exc


def emit_table(headers: list[str], rows: list[list[object]]) -> None:
    """Print a plain, aligned table (rich on a terminal would wrap; plain text pipes well)."""
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def on_terminal() -> bool:
    """Whether a person can be asked (standard input is a terminal)."""
    return sys.stdin.isatty()


yes_option = click.option("--yes", "-y", "yes", is_flag=True,
                          help="Do not ask before acting (for scripts); what it does is "
                               "still printed.")


def confirm(consequence: Consequence, *, yes: bool) -> None:
    """Say what the action does, then ask on a terminal; ``--yes`` answers for scripts.

    Without a terminal and without ``--yes`` nothing is done: a script that never meant
    to purge files must not purge them because nobody could be asked.
    """
    click.echo(consequence.text(), err=True)
    if yes or not consequence.asks:
        return
    if not on_terminal():
        raise UsageError(f"{consequence.action} was not done: it needs confirming. Run it "
                         "on a terminal to be asked, or add --yes in a script")
    if not click.confirm("Go ahead?", default=False, err=True):
        raise UsageError(f"{consequence.action} was not done: not confirmed")
