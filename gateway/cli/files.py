"""``blindpost files``: what is stored for partners, for operators (metadata only)."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import (
    data_dir_option,
    emit_json,
    emit_table,
    json_option,
    open_app,
    operator,
    when,
)
from gateway.db.models import TransferState
from gateway.transfers import FileFilter

ALL = "all"


@click.command()
@click.option("--partner", metavar="SLUG", help="Only this partner's files.")
@click.option("--state", type=click.Choice([*(s.value for s in TransferState), ALL]),
              default=TransferState.AVAILABLE.value, show_default=True,
              help="available: waiting for the partner; the others ended; all: every file.")
@click.option("--limit", type=click.IntRange(min=1, max=1_000_000), default=500,
              show_default=True, help="At most this many, newest first.")
@json_option
@data_dir_option
def files(partner: str | None, state: str, limit: int, as_json: bool,
          data_dir: Path | None) -> None:
    """List files, newest first, with partner, name, size, uploader, times, downloads
    and state.

    Only metadata: no one, operators included, reads a file's contents here.

    \b
    Examples:
      blindpost files
      blindpost files --partner uni-research --state all --json
    """
    chosen = None if state == ALL else TransferState(state)
    entries = open_app(data_dir).transfers.files(
        operator(), FileFilter(partner=partner, state=chosen), limit=limit)
    if as_json:
        emit_json(entries)
        return
    emit_table(["partner", "name", "size", "uploader", "uploaded", "expires", "downloads",
                "state", "id"],
               [[e.partner, e.name, e.size, e.uploaded_by, when(e.created_at),
                 when(e.expires_at), f"{e.downloads}/{e.max_downloads or 'any'}",
                 e.state.value, e.id] for e in entries])
