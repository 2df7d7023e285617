"""``blindpost agreement …``: partners' data-sharing agreements, decided by two admins."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.agreement_terms import parse_aliases
from gateway.cli.common import data_dir_option, emit_json, json_option, open_app, operator, prove
from gateway.cli.users import show_applied, show_proposal
from gateway.errors import UsageError


@click.group()
def agreement() -> None:
    """Data-sharing agreements: the columns a partner may receive, checked at every upload.

    One admin proposes an agreement (--by), a second admin approves it with a fresh code
    (`agreement approve`); until then it grants nothing. See docs/agreements.md.
    """


@agreement.command("propose")
@click.argument("partner")
@click.option("--columns", required=True, metavar="COL,COL…",
              help="The data elements the partner may receive (column names; case, spaces "
                   "and underscores do not matter; hcn, dob, postcode… are known aliases).")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS=COLUMN",
              help="Another name of an agreed column, for this partner (repeatable).")
@click.option("--max-records", type=click.IntRange(min=0), metavar="N",
              help="The most records a file may hold (default: no limit).")
@click.option("--allow-opaque", is_flag=True,
              help="Allow files whose structure cannot be read (zip, spreadsheet, age "
                   "files sent without a declaration).")
@click.option("--by", required=True, metavar="ADMIN",
              help="The proposing admin (their one-time code is asked for).")
@json_option
@data_dir_option
def agreement_propose(partner: str, columns: str, aliases: tuple[str, ...],
                      max_records: int | None, allow_opaque: bool, by: str, as_json: bool,
                      data_dir: Path | None) -> None:
    """Propose PARTNER's data-sharing agreement; a second admin approves it.

    \b
    Example:
      blindpost agreement propose uni-research --columns hcn,birth_date,postal_code \\
          --max-records 500000 --by alice
      blindpost agreement approve 7 --by bob
    """
    names = [name for name in columns.split(",") if name.strip()]
    if not names:
        raise UsageError("--columns names at least one column")
    app = open_app(data_dir)
    change = app.agreements.propose(prove(app, by, purpose="agreement propose"),
                                    partner=partner, columns=names,
                                    aliases=parse_aliases(aliases), max_records=max_records,
                                    allow_opaque=allow_opaque)
    if as_json:
        show_proposal(change, as_json=True)
        return
    click.echo(f"proposed (change {change.id}): {change.summary}; it grants nothing until a "
               f"second admin runs `blindpost agreement approve {change.id} --by NAME`")


@agreement.command("approve")
@click.argument("change_id", type=click.IntRange(min=1))
@click.option("--by", required=True, metavar="ADMIN",
              help="The approving admin, not the proposer (their one-time code is asked for).")
@json_option
@data_dir_option
def agreement_approve(change_id: int, by: str, as_json: bool, data_dir: Path | None) -> None:
    """Approve a proposed agreement (change CHANGE_ID); it applies at once.

    \b
    Example:
      blindpost agreement approve 7 --by bob
    """
    app = open_app(data_dir)
    applied = app.authority.approve(prove(app, by, purpose=f"agreement approve {change_id}"),
                                    change_id=change_id)
    show_applied(applied, as_json=as_json)


@agreement.command("show")
@click.argument("partner")
@json_option
@data_dir_option
def agreement_show(partner: str, as_json: bool, data_dir: Path | None) -> None:
    """Show PARTNER's data-sharing agreement in force.

    \b
    Example:
      blindpost agreement show uni-research --json
    """
    app = open_app(data_dir)
    info = app.agreements.show(operator(), partner)
    if as_json:
        emit_json({"partner": partner, "agreement": info})
        return
    if info is None:
        rule = ("refused (require_agreement is on)" if app.settings.require_agreement
                else "allowed, and their data elements recorded")
        click.echo(f"{partner} has no data-sharing agreement: uploads are {rule}")
        return
    click.echo(f"partner:       {info.partner}")
    click.echo(f"columns:       {', '.join(info.columns)}")
    if info.aliases:
        click.echo("aliases:       " + ", ".join(f"{a}={t}" for a, t in
                                                 sorted(info.aliases.items())))
    click.echo(f"max records:   {info.max_records if info.max_records is not None else 'no limit'}")
    click.echo(f"opaque files:  {'allowed' if info.allow_opaque else 'refused'}")
    click.echo(f"decided by:    {info.proposed_by} (proposed), {info.approved_by} (approved), "
               f"change {info.change_id}, {info.approved_at.isoformat()}")
