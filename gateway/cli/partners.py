"""``blindpost partner …``: the organisations that receive files."""

from __future__ import annotations

import re
from pathlib import Path

import click

from gateway.actors import Actor
from gateway.cli.common import data_dir_option, emit_json, emit_table, json_option, open_app
from gateway.db.models import Partner
from gateway.errors import UsageError


def parse_duration_days(text: str) -> int:
    """Parse ``7``, ``7d`` or ``2w`` into days."""
    match = re.fullmatch(r"(\d+)\s*([dw]?)", text.strip().lower())
    if not match:
        raise UsageError(f"invalid duration {text!r}: use days like 7, 7d or 2w")
    return int(match.group(1)) * (7 if match.group(2) == "w" else 1)


def partner_dict(partner: Partner) -> dict[str, object]:
    return {"slug": partner.slug, "name": partner.name,
            "retention_days": partner.retention_days, "max_downloads": partner.max_downloads,
            "disabled": partner.disabled, "created_at": partner.created_at}


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
    row = open_app(data_dir).partners.add(actor=Actor.local_operator(), slug=slug, name=name,
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
    rows = open_app(data_dir).partners.all()
    if as_json:
        emit_json([partner_dict(p) for p in rows])
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
    row = app.partners.get(slug)
    keys = app.keys.all(partner=slug)
    info = partner_dict(row) | {"keys": [{"id": k.id, "kind": k.kind, "state": k.state,
                                          "fingerprint": k.fingerprint, "label": k.label}
                                         for k in keys]}
    if as_json:
        emit_json(info)
        return
    for field in ("slug", "name", "retention_days", "max_downloads", "disabled", "created_at"):
        click.echo(f"{field:15} {info[field]}")
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
    open_app(data_dir).partners.disable(actor=Actor.local_operator(), slug=slug)
    click.echo(f"disabled partner {slug}")
