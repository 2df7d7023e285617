"""``blindpost partner …``: the organisations that receive files."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import (
    confirm,
    data_dir_option,
    emit_json,
    emit_table,
    json_option,
    open_app,
    operator,
    yes_option,
)
from gateway.durations import parse_retention
from gateway.errors import UsageError
from gateway.partners import PartnerChange
from gateway.values import jsonable

# The services check the ceiling, with the same message everywhere.
MAX_DOWNLOADS = click.IntRange(min=1)


@click.group()
def partner() -> None:
    """Manage partners (the organisations that receive files)."""


@partner.command("add")
@click.argument("slug")
@click.option("--name", help="Display name (default: the slug).")
@click.option("--retention", metavar="DURATION",
              help="How long files wait: 90s, 15m, 12h, 7d, 2w; a bare number is days "
                   "(default: the default_retention setting, 7d).")
@click.option("--max-downloads", type=MAX_DOWNLOADS, help="Downloads per file.")
@data_dir_option
def partner_add(slug: str, name: str | None, retention: str | None, max_downloads: int | None,
                data_dir: Path | None) -> None:
    """Create a partner with an empty inbox.

    \b
    Example:
      blindpost partner add uni-research --name "University Research" --retention 7d
    """
    seconds = parse_retention(retention)
    row = open_app(data_dir).partners.add(operator(), slug=slug, name=name,
                                          retention_seconds=seconds, max_downloads=max_downloads)
    click.echo(f"created partner {row.slug} (retention {row.retention})")


@partner.command("set")
@click.argument("slug")
@click.option("--retention", metavar="DURATION",
              help="How long new files wait: 90s, 15m, 12h, 7d, 2w; a bare number is days.")
@click.option("--max-downloads", type=MAX_DOWNLOADS, help="Downloads per new file.")
@click.option("--no-download-limit", is_flag=True, help="New files may be downloaded any "
              "number of times until they expire.")
@click.option("--name", help="Display name.")
@data_dir_option
def partner_set(slug: str, retention: str | None, max_downloads: int | None,
                no_download_limit: bool, name: str | None, data_dir: Path | None) -> None:
    """Change a partner's retention, download limit or name (audited).

    Files already waiting keep the expiry and download limit they were uploaded with.

    \b
    Example:
      blindpost partner set uni-research --retention 12h --max-downloads 1
    """
    if max_downloads is not None and no_download_limit:
        raise UsageError("give --max-downloads or --no-download-limit, not both")
    if name is None and retention is None and max_downloads is None and not no_download_limit:
        raise UsageError("nothing to change: give --retention, --max-downloads, "
                         "--no-download-limit or --name")
    change = PartnerChange(name=name, retention_seconds=parse_retention(retention),
                           max_downloads=max_downloads, unlimited_downloads=no_download_limit)
    row = open_app(data_dir).partners.change(operator(), slug=slug, change=change)
    limit = "no download limit" if row.max_downloads is None else (
        f"at most {row.max_downloads} downloads")
    click.echo(f"partner {row.slug}: retention {row.retention}, {limit}, name {row.name!r}")


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
               [[p.slug, p.name, p.retention, p.max_downloads,
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
    for field in ("slug", "name", "retention", "max_downloads", "disabled", "created_at"):
        click.echo(f"{field:15} {getattr(row, field)}")
    click.echo("keys:" if keys else "keys:          none (uploads are refused)")
    for k in keys:
        click.echo(f"  #{k.id} {k.state.value:9} {k.kind:15} {k.fingerprint} {k.label}")


@partner.command("disable")
@click.argument("slug")
@click.option("--keep-waiting", is_flag=True,
              help="Keep the files waiting for the partner until they expire, instead of "
                   "purging them now.")
@yes_option
@data_dir_option
def partner_disable(slug: str, keep_waiting: bool, yes: bool, data_dir: Path | None) -> None:
    """Disable a partner: its users cannot sign in and no upload reaches it.

    The files waiting for it are purged at once (each purge audited) unless
    --keep-waiting; its users' open SFTP sessions end within seconds. Says how many
    files it purges and asks first (--yes in scripts).

    \b
    Example:
      blindpost partner disable uni-research
      blindpost partner disable uni-research --keep-waiting --yes
    """
    app = open_app(data_dir)
    confirm(app.consequences.partner_disable(operator(), slug=slug, keep_waiting=keep_waiting),
            yes=yes)
    app.partners.disable(operator(), slug=slug, keep_waiting=keep_waiting)
    waiting = ("kept until they expire" if keep_waiting else "purged")
    click.echo(f"disabled partner {slug}; its waiting files were {waiting}")


@partner.command("enable")
@click.argument("slug")
@data_dir_option
def partner_enable(slug: str, data_dir: Path | None) -> None:
    """Enable a disabled partner again: its users sign in and uploads reach it.

    \b
    Example:
      blindpost partner enable uni-research
    """
    open_app(data_dir).partners.enable(operator(), slug=slug)
    click.echo(f"enabled partner {slug}")
