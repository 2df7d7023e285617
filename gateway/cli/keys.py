"""``blindpost key …``: partner recipient keys under the two-person rule."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.cli.common import (
    by_option,
    confirm,
    data_dir_option,
    emit_json,
    emit_table,
    json_option,
    open_app,
    operator,
    prove,
    yes_option,
)
from gateway.cli.fingerprint import key_fingerprint

if TYPE_CHECKING:
    # Only for annotations: `key fingerprint` runs on client installs without a database.
    from gateway.partner_keys import RecipientKey


def _show(key: RecipientKey, verb: str, as_json: bool) -> None:
    if as_json:
        emit_json(key)
        return
    click.echo(f"{verb} key {key.id} for {key.partner}: {key.kind} {key.fingerprint}")
    if key.also_approved_for:
        # A warning, not a refusal: one person may hold the key for two partners, but
        # whoever holds it opens both partners' files.
        click.echo("warning: this key is already approved for "
                   + ", ".join(key.also_approved_for)
                   + "; whoever holds its private key can open their files too", err=True)


@click.group()
def key() -> None:
    """Partner encryption keys: propose, approve (by a second admin), revoke, list;
    and the fingerprint of a key, anywhere.

    Each change is made by a named admin, proven by their current one-time code.
    """


key.add_command(key_fingerprint, "fingerprint")


@key.command("propose")
@click.argument("partner")
@click.argument("recipient")
@click.option("--label", default="", help="A note, e.g. who holds the private key.")
@click.option("--switch-type", is_flag=True,
              help="The key is of another type (post-quantum or classical) than the "
                   "partner's keys: once approved, new files go to it alone, and the old "
                   "keys stay approved for the files already waiting.")
@by_option
@json_option
@data_dir_option
def key_propose(partner: str, recipient: str, label: str, switch_type: bool, by: str,
                as_json: bool, data_dir: Path | None) -> None:
    """Propose RECIPIENT (age1pq1… or age1…) as a key of PARTNER.

    The key receives files only once a different admin approves it; compare the
    fingerprint with the partner by phone before approving. A key of the other type
    than the partner's needs --switch-type (see docs/security.md); a key already
    approved for another partner is accepted with a warning.

    \b
    Examples:
      blindpost key propose uni-research age1pq1… --label "lab laptop" --by alice
      blindpost key propose uni-research age1… --switch-type --by alice
    """
    app = open_app(data_dir)
    admin = prove(app, by, purpose="key propose")
    _show(app.keys.propose(admin, partner=partner, recipient=recipient, label=label,
                           switch_type=switch_type), "proposed", as_json)


@key.command("approve")
@click.argument("key_id", type=int)
@by_option
@json_option
@data_dir_option
def key_approve(key_id: int, by: str, as_json: bool, data_dir: Path | None) -> None:
    """Approve a proposed key; the approver must not be the proposer.

    \b
    Example:
      blindpost key approve 3 --by bob
    """
    app = open_app(data_dir)
    admin = prove(app, by, purpose="key approve")
    _show(app.keys.approve(admin, key_id=key_id), "approved", as_json)


@key.command("revoke")
@click.argument("key_id", type=int)
@click.option("--keep-waiting", is_flag=True,
              help="If this is the partner's last approved key, keep the files waiting for "
                   "it until they expire instead of purging them now.")
@yes_option
@by_option
@json_option
@data_dir_option
def key_revoke(key_id: int, keep_waiting: bool, yes: bool, by: str, as_json: bool,
               data_dir: Path | None) -> None:
    """Revoke a key now: no new file is encrypted to it.

    Revoking a partner's last approved key also purges the files waiting for it
    (each purge audited), unless --keep-waiting; that revoke says how many files it
    purges and asks first (--yes in scripts), before the code is asked for.

    \b
    Example:
      blindpost key revoke 3 --by alice
      blindpost key revoke 3 --by alice --keep-waiting --yes
    """
    app = open_app(data_dir)
    confirm(app.consequences.key_revoke(operator(), key_id=key_id, keep_waiting=keep_waiting),
            yes=yes)
    admin = prove(app, by, purpose="key revoke")
    _show(app.keys.revoke(admin, key_id=key_id, keep_waiting=keep_waiting), "revoked", as_json)


@key.command("list")
@click.option("--partner", metavar="SLUG", help="Only this partner's keys.")
@json_option
@data_dir_option
def key_list(partner: str | None, as_json: bool, data_dir: Path | None) -> None:
    """List partner keys with their state and fingerprint.

    \b
    Example:
      blindpost key list --partner uni-research --json
    """
    keys = open_app(data_dir).keys.all(operator(), partner=partner)
    if as_json:
        emit_json(keys)
        return
    emit_table(["id", "partner", "kind", "state", "fingerprint", "label"],
               [[k.id, k.partner, k.kind, k.state.value, k.fingerprint, k.label] for k in keys])
