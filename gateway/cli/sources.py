"""``blindpost source …``: source addresses held back by the sign-in throttle."""

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


@click.group()
def source() -> None:
    """Source addresses slowed down after many failed sign-ins (see docs/security.md).

    Only attempts that do not prove an account are held back: a colleague behind the
    same address who signs in with their own key is never refused because of it.
    """


@source.command("list")
@json_option
@data_dir_option
def source_list(as_json: bool, data_dir: Path | None) -> None:
    """List addresses held back now, and until when.

    \b
    Example:
      blindpost source list
    """
    blocks = open_app(data_dir).auth.held_back(operator())
    if as_json:
        emit_json(blocks)
        return
    emit_table(["address", "failures", "held back until"],
               [[b.key, b.failures, when(b.blocked_until)] for b in blocks])


@source.command("unblock")
@click.argument("address")
@data_dir_option
def source_unblock(address: str, data_dir: Path | None) -> None:
    """Lift an address's back-off and forget its failures (audited).

    \b
    Example:
      blindpost source unblock 192.0.2.44
    """
    lifted = open_app(data_dir).auth.unblock_source(operator(), address=address)
    if lifted.blocked_until is not None:
        click.echo(f"unblocked {lifted.key} (it was held back until {when(lifted.blocked_until)})")
    else:
        click.echo(f"{lifted.key} was not held back; its {lifted.failures} failures are forgotten")
