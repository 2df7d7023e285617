"""``blindpost integrity …`` and ``blindpost state-key …``: signed state, checked and rotated."""

from __future__ import annotations

from pathlib import Path

import click

from gateway import resealing
from gateway.cli.common import data_dir_option, emit_json, json_option, open_app, operator
from gateway.cli.errors import CommandError
from gateway.integrity import remove_forged


@click.group()
def integrity() -> None:
    """Check that every granting row was written by the gateway (its seal verifies).

    Rows are sealed with keys/state_key; a row written into the database by anyone
    else grants nothing. See docs/security.md for what to do when rows fail.
    """


@integrity.command("check")
@json_option
@data_dir_option
def integrity_check(as_json: bool, data_dir: Path | None) -> None:
    """Verify the seal of every granting row; exit 1 and list the rows that fail.

    Quick enough for a monitoring probe; each failing row is also an audit event.

    \b
    Example:
      blindpost integrity check --json
    """
    report = open_app(data_dir).integrity.check(operator())
    if as_json:
        emit_json({"checked": report.checked, "ok": report.ok,
                   "findings": [{"table": f.table, "row": f.row, "reason": f.reason}
                                for f in report.findings]})
    elif report.ok:
        click.echo(f"integrity OK: {report.checked} rows verified")
    if not report.ok:
        raise CommandError(f"integrity check FAILED: {len(report.findings)} of "
                           f"{report.checked} rows fail their seal:\n"
                           + "\n".join(f"  - {finding}" for finding in report.findings))


@integrity.command("remove")
@click.argument("table")
@click.argument("row_id")
@data_dir_option
def integrity_remove(table: str, row_id: str, data_dir: Path | None) -> None:
    """Delete one row that fails its seal (a forgery); audited.

    A row that verifies is refused: change it with the normal commands.

    \b
    Example:
      blindpost integrity remove ssh_keys 17
    """
    remove_forged(open_app(data_dir), operator(), table=table, row_id=row_id)
    click.echo(f"removed {table} row {row_id}")


@click.group("state-key")
def state_key() -> None:
    """The host's state key (keys/state_key): seals, TOTP secrets, audit entry MACs.

    Not a partner's recipient key (that is `blindpost key`).
    """


@state_key.command("rotate")
@data_dir_option
def rotate_state_key(data_dir: Path | None) -> None:
    """Replace keys/state_key and re-seal every row with the new key.

    Refused, listing them, if any row fails its seal or is not current, and while any
    other process uses the key (each is named: stop the services on every node first).
    Copy the new key file to every node before they next start.

    \b
    Example:
      blindpost state-key rotate --data-dir /var/lib/blindpost
    """
    done = resealing.rotate(open_app(data_dir), operator())
    click.echo(f"state key rotated: {done.old_key} -> {done.new_key}; "
               f"{done.rows} rows re-sealed")
