"""``blindpost partner …``: the organisations that receive files."""

from __future__ import annotations

import re
from pathlib import Path

import click

from gateway.cli.common import (
    data_dir_option,
    emit_json,
    emit_table,
    json_option,
    open_app,
    operator,
)
from gateway.errors import UsageError
from gateway.values import jsonable


def parse_duration_days(text: str) -> int:
    """Parse ``7``, ``7d`` or ``2w`` into days."""
    match = re.fullmatch(r"(\d+)\s*([dw]?)", text.strip().lower())
    if not match:
        raise UsageError(f"invalid duration {text!r}: use days like 7, 7d or 2w")
    return int(match.group(1)) * (7 if match.group(2) == "w" else 1)


@click.group()
def partner() -> None:
    """Manage partners (the organisations that receive files)."""


@partner.command("add")
@click.argument("slug")
@click.option("--name", help="Display name (default: the slug).")
@click.option("--retention", metavar="DURATION",
              help="How long files wait, e.g. 7d or 2w (default: the setting, 7 days).")
@click.option("--max-downloads", type=click.IntRange(min=1), help="Downloads per file.")
@data_dir_option
def partner_add(slug: str, name: str | None, retention: str | None, max_downloads: int | None,
                data_dir: Path | None) -> None:
    """Create a partner with an empty inbox.

    \b
    Example:
      blindpost partner add uni-research --name "University Research" --retention 7d
    """
    days = parse_duration_days(retention) if retention else None
    row = open_app(data_dir).partners.add(operator(), slug=slug, name=name,
                                          retention_days=days, max_downloads=max_downloads)
    click.echo(f"created partner {row.slug} (retention {row.retention_days} days)")


@partner.command("list")
@json_option
@data_dir_option
def partner_list(as_json: bool, data_dir: Path | None) -> None:
    """List partners.

    \b
    Example:
      blindpost partner list --json
    """
    rows = open_app(data_dir).partners.all(operator())
    if as_json:
        emit_json(rows)
        return
    emit_table(["slug", "name", "retention", "max downloads", "state"],
               [[p.slug, p.name, f"{p.retention_days}d", p.max_downloads,
                 "disabled" if p.disabled else "active"] for p in rows])


@partner.command("show")
@click.argument("slug")
@json_option
@data_dir_option
def partner_show(slug: str, as_json: bool, data_dir: Path | None) -> None:
    """Show one partner and its keys.

    \b
    Example:
      blindpost partner show uni-research
    """
    app = open_app(data_dir)
    row = app.partners.get(operator(), slug)
    keys = app.keys.all(operator(), partner=slug)
    if as_json:
        info = jsonable(row)
        assert isinstance(info, dict)
        emit_json({**info, "keys": keys})
        return
    for field in ("slug", "name", "retention_days", "max_downloads", "disabled", "created_at"):
        click.echo(f"{field:15} {getattr(row, field)}")
    click.echo("keys:" if keys else "keys:          none (uploads are refused)")
    for k in keys:
        click.echo(f"  #{k.id} {k.state.value:9} {k.kind:15} {k.fingerprint} {k.label}")


@partner.command("disable")
@click.argument("slug")
@data_dir_option
def partner_disable(slug: str, data_dir: Path | None) -> None:
    """Disable a partner: its users cannot sign in and no upload reaches it.

    \b
    Example:
      blindpost partner disable uni-research
    """
    open_app(data_dir).partners.disable(operator(), slug=slug)
    click.echo(f"disabled partner {slug}")
