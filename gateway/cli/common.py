"""Shared pieces of the ``blindpost`` commands: options, opening the app, output, errors."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import NoReturn

import click

from gateway.app import App
from gateway.cli import DATA_DIR_KEY
from gateway.config import CONFIG_FILE_NAME, Settings, load_settings

data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Data directory (default: $BLINDPOST_DATA_DIR or ./var).")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON instead of a table.")


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print one ``blindpost: error: …`` line on stderr and exit."""
    click.echo(f"blindpost: error: {message}", err=True)
    sys.exit(code)


def settings_for(data_dir: Path | None) -> Settings:
    """Settings for the command's ``--data-dir``, else the top-level one, else the default."""
    if data_dir is None:
        ctx = click.get_current_context(silent=True)
        data_dir = ctx.meta.get(DATA_DIR_KEY) if ctx else None
    return load_settings(data_dir=data_dir)


def open_app(data_dir: Path | None) -> App:
    """Open an initialised installation, or fail with a hint to run ``blindpost init``."""
    settings = settings_for(data_dir)
    if not settings.keys_dir.is_dir() or not (settings.data_dir / CONFIG_FILE_NAME).is_file():
        fail(f"{settings.data_dir} is not an initialised data directory; "
             "run `blindpost init` first")
    app = App(settings)
    app.check_database()
    return app


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def emit_json(obj: object) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    click.echo(json.dumps(obj, indent=2, default=_default))


def emit_table(headers: list[str], rows: list[list[object]]) -> None:
    """Print a plain, aligned table (rich on a terminal would wrap; plain text pipes well)."""
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"
