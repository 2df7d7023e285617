"""``blindpost key …``: partner recipient keys under the two-person rule."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import data_dir_option, emit_json, emit_table, json_option, open_app
from gateway.db.models import PartnerKey


def key_dict(key: PartnerKey) -> dict[str, object]:
    return {"id": key.id, "partner": key.partner.slug, "kind": key.kind, "state": key.state,
            "fingerprint": key.fingerprint, "label": key.label, "recipient": key.recipient,
            "proposed_at": key.proposed_at, "approved_at": key.approved_at,
            "revoked_at": key.revoked_at}


def _show(key: PartnerKey, verb: str, as_json: bool) -> None:
    if as_json:
        emit_json(key_dict(key))
    else:
        click.echo(f"{verb} key {key.id} for {key.partner.slug}: {key.kind} {key.fingerprint}")


@click.group()
def key() -> None:
    """Partner encryption keys: propose, approve (by a second admin), revoke, list."""


@key.command("propose")
@click.argument("partner")
@click.argument("recipient")
@click.option("--label", default="", help="A note, e.g. who holds the private key.")
@click.option("--by", required=True, metavar="ADMIN", help="The proposing admin.")
@json_option
@data_dir_option
def key_propose(partner: str, recipient: str, label: str, by: str, as_json: bool,
                data_dir: Path | None) -> None:
    """Propose RECIPIENT (age1pq1… or age1…) as a key of PARTNER.

    The key receives files only once a different admin approves it; compare the
    fingerprint with the partner by phone before approving.

    \b
    Example:
      blindpost key propose uni-research age1pq1… --label "lab laptop" --by alice
    """
    new = open_app(data_dir).keys.propose(partner=partner, recipient=recipient, by=by,
                                          label=label)
    _show(new, "proposed", as_json)


@key.command("approve")
@click.argument("key_id", type=int)
@click.option("--by", required=True, metavar="ADMIN", help="The approving admin.")
@json_option
@data_dir_option
def key_approve(key_id: int, by: str, as_json: bool, data_dir: Path | None) -> None:
    """Approve a proposed key; the approver must not be the proposer.

    \b
    Example:
      blindpost key approve 3 --by bob
    """
    _show(open_app(data_dir).keys.approve(key_id=key_id, by=by), "approved", as_json)


@key.command("revoke")
@click.argument("key_id", type=int)
@click.option("--by", required=True, metavar="ADMIN", help="The revoking admin.")
@json_option
@data_dir_option
def key_revoke(key_id: int, by: str, as_json: bool, data_dir: Path | None) -> None:
    """Revoke a key now: no new file is encrypted to it.

    \b
    Example:
      blindpost key revoke 3 --by alice
    """
    _show(open_app(data_dir).keys.revoke(key_id=key_id, by=by), "revoked", as_json)


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
    keys = open_app(data_dir).keys.all(partner=partner)
    if as_json:
        emit_json([key_dict(k) for k in keys])
        return
    emit_table(["id", "partner", "kind", "state", "fingerprint", "label"],
               [[k.id, k.partner.slug, k.kind, k.state.value, k.fingerprint, k.label]
                for k in keys])
