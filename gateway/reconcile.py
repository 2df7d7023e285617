"""Replaying the audit log into the state it implies, and comparing that with the database.

The log is verified (Merkle tree, signed checkpoints, entry MACs), so the state it
implies is what the gateway really did: which partners, accounts (with their SSH keys,
enrolments, machine flag and allowed networks), recipient keys, machine grants,
authority changes and transfers exist, and in which state. A database that says otherwise
was changed behind the gateway's back — even with the state key, by someone who could
re-seal rows but not rewrite the witnessed log. Each difference names the table, row,
field, what the log implies and what the database holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from gateway import networks
from gateway.audit import AuditEvent, AuditTag
from gateway.db.models import (
    Account,
    Agreement,
    AuthorityChange,
    MachineGrant,
    Partner,
    PartnerKey,
    Transfer,
)

State = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Breach:
    """An event the state at its moment did not allow: a grant made from an old copy of
    a row put back for a while (a hit and run), or with the gateway's keys."""

    index: int
    tag: str
    table: str
    row: str
    field: str
    found: object

    def __str__(self) -> str:
        return (f"entry {self.index} ({self.tag}): {self.table} row {self.row}: "
                f"{self.field} was {self.found!r} at that moment")


@dataclass
class ImpliedState:
    """What the log says exists, by table and row, and the events it did not allow."""

    partners: State = field(default_factory=dict)
    accounts: State = field(default_factory=dict)
    keys: State = field(default_factory=dict)
    transfers: State = field(default_factory=dict)
    grants: State = field(default_factory=dict)
    # Per file: its download limit and the complete downloads so far.
    downloads: dict[str, list[Any]] = field(default_factory=dict)
    breaches: list[Breach] = field(default_factory=list)
    changes: State = field(default_factory=dict)
    # Per partner slug: its data-sharing agreement's terms and deciding change.
    agreements: State = field(default_factory=dict)


def _name(event: AuditEvent) -> str:
    return event.subject.partition(":")[2]


def _retention_seconds(details: dict[str, Any]) -> object:
    # Events from before retention was kept in seconds give whole days.
    if "retention_seconds" in details:
        return details["retention_seconds"]
    days = details.get("retention_days")
    return days * 86400 if isinstance(days, int) else days


def _partner_create(state: ImpliedState, event: AuditEvent) -> None:
    state.partners[_name(event)] = {"disabled": False,
                                    "retention_seconds": _retention_seconds(event.details),
                                    "max_downloads": event.details.get("max_downloads")}


def _account_create(state: ImpliedState, event: AuditEvent) -> None:
    # Events from before an attribute existed lack its detail: the default then held.
    details = event.details
    state.accounts[_name(event)] = {"role": details.get("role"),
                                    "partner": details.get("partner"),
                                    "disabled": False, "ssh_keys": set(),
                                    "totp": details.get("totp", True),
                                    "totp_pending": bool(details.get("enrol_by_ssh")),
                                    "machine": False, "allow_from": details.get("allow_from")}


def _account_fields(**fixed: object) -> Callable[[ImpliedState, AuditEvent], None]:
    """Set fixed values, and ``allow_from`` from the details when the event carries it."""
    def apply(state: ImpliedState, event: AuditEvent) -> None:
        row = state.accounts.get(_name(event))
        if row is not None:
            row.update(fixed)
            if "allow_from" in event.details:
                row["allow_from"] = event.details["allow_from"]
    return apply


def _totp_reset(state: ImpliedState, event: AuditEvent) -> None:
    # A console account's reset removes its code until the holder enrols a new one.
    row = state.accounts.get(_name(event))
    if row is not None:
        row.update(totp=event.details.get("totp", True),
                   totp_pending=bool(event.details.get("enrol_by_ssh")))


def _key_removed(state: ImpliedState, event: AuditEvent) -> None:
    row = state.accounts.get(_name(event))
    if row is not None:
        row["ssh_keys"].discard(event.details.get("fingerprint"))


def _grant_proposed(state: ImpliedState, event: AuditEvent) -> None:
    account = _name(event)
    for grant in state.grants.values():
        if grant["account"] == account and grant["state"] == "proposed":
            grant["state"] = "superseded"
    state.grants[str(event.details.get("grant_id"))] = {
        "account": account, "allow_from": event.details.get("allow_from"),
        "state": "proposed"}


def _grant_approved(state: ImpliedState, event: AuditEvent) -> None:
    _account_fields(machine=True)(state, event)
    grant = state.grants.get(str(event.details.get("grant_id")))
    if grant is not None:
        grant["state"] = "approved"


def _change_proposed(state: ImpliedState, event: AuditEvent) -> None:
    kind, target = event.details.get("kind"), event.details.get("target")
    for change in state.changes.values():
        if (change["kind"], change["target"], change["state"]) == (kind, target, "proposed"):
            change["state"] = "superseded"
    state.changes[str(event.details.get("change_id"))] = {"kind": kind, "target": target,
                                                          "state": "proposed"}


def _change_decided(decision: str) -> Callable[[ImpliedState, AuditEvent], None]:
    def apply(state: ImpliedState, event: AuditEvent) -> None:
        change = state.changes.get(str(event.details.get("change_id")))
        if change is not None:
            change["state"] = decision
    return apply


def _partner_changed(state: ImpliedState, event: AuditEvent) -> None:
    row = state.partners.get(_name(event))
    if row is None:
        return
    for name in ("retention_seconds", "max_downloads"):
        if f"{name}_new" in event.details:
            row[name] = event.details[f"{name}_new"]
    days = event.details.get("retention_days_new")
    if isinstance(days, int):  # Written before retention was kept in seconds.
        row["retention_seconds"] = days * 86400


def _setter(table: str, key: str, value: object) -> Callable[[ImpliedState, AuditEvent], None]:
    def apply(state: ImpliedState, event: AuditEvent) -> None:
        row = getattr(state, table).get(_row_key(table, event))
        if row is not None:
            row[key] = value
    return apply


def _row_key(table: str, event: AuditEvent) -> str:
    # Recipient keys are named by id in their details; everything else by the subject.
    return str(event.details.get("key_id")) if table == "keys" else _name(event)


def _key_added(state: ImpliedState, event: AuditEvent) -> None:
    row = state.accounts.get(_name(event))
    if row is not None:
        row["ssh_keys"].add(event.details.get("fingerprint"))


def _key_proposed(state: ImpliedState, event: AuditEvent) -> None:
    state.keys[str(event.details.get("key_id"))] = {
        "partner": event.details.get("partner"), "kind": event.details.get("kind"),
        "fingerprint": event.details.get("fingerprint"), "state": "proposed"}


def _uploaded(state: ImpliedState, event: AuditEvent) -> None:
    state.transfers[_name(event)] = {
        "partner": event.details.get("partner"), "name": event.details.get("name"),
        "size": event.details.get("size"), "sha256": event.details.get("sha256"),
        "state": "available"}


def _check_upload(state: ImpliedState, event: AuditEvent) -> None:
    """Every key the file was encrypted to was approved for its partner then."""
    for key_id in event.details.get("recipient_keys") or ():
        key = state.keys.get(str(key_id))
        if key is None:
            _breach(state, event, "partner_keys", str(key_id), "(row)", "absent")
        elif key["state"] != "approved":
            _breach(state, event, "partner_keys", str(key_id), "state", key["state"])
        elif key["partner"] != event.details.get("partner"):
            _breach(state, event, "partner_keys", str(key_id), "partner", key["partner"])
    state.downloads[_name(event)] = [event.details.get("max_downloads"), 0]


def _check_sign_in(state: ImpliedState, event: AuditEvent) -> None:
    """The account, its partner, key, networks and kind allowed this sign-in then."""
    name, details = _name(event), event.details
    account = state.accounts.get(name)
    if account is None:
        _breach(state, event, "accounts", name, "(row)", "absent")
        return
    if account["disabled"]:
        _breach(state, event, "accounts", name, "disabled", True)
    partner = state.partners.get(str(account["partner"])) if account["partner"] else None
    if partner is not None and partner["disabled"]:
        _breach(state, event, "partners", str(account["partner"]), "disabled", True)
    key = details.get("key")
    if key and key not in account["ssh_keys"]:
        _breach(state, event, "ssh_keys", f"{name}:{key}", "(row)", "absent")
    source = details.get("source")
    # Allowed networks bind SFTP sign-ins (a key first), not the console's.
    over_ssh = str(details.get("method", "")).startswith("publickey")
    if (over_ssh and isinstance(source, str)
            and not networks.allows(networks.stored(account["allow_from"]), source)):
        _breach(state, event, "accounts", name, "allow_from", account["allow_from"])
    if details.get("method") == "publickey" and not account["machine"]:
        _breach(state, event, "accounts", name, "machine", False)


def _check_download(state: ImpliedState, event: AuditEvent) -> None:
    """A complete download stayed within its file's limit."""
    limit = state.downloads.setdefault(_name(event), [None, 0])
    limit[1] += 1
    if isinstance(limit[0], int) and limit[1] > limit[0]:
        _breach(state, event, "transfers", _name(event), "downloads", limit[1])


def _breach(state: ImpliedState, event: AuditEvent, table: str, row: str, name: str,
            found: object) -> None:
    state.breaches.append(Breach(event.index, event.tag, table, row, name, found))


# Events checked against the state at their moment, before they are applied.
CHECKS: dict[AuditTag, Callable[[ImpliedState, AuditEvent], None]] = {
    AuditTag.UPLOAD_COMPLETE: _check_upload,
    AuditTag.LOGIN_SUCCESS: _check_sign_in,
    AuditTag.DOWNLOAD_COMPLETE: _check_download,
}

def _agreement_set(state: ImpliedState, event: AuditEvent) -> None:
    details = event.details
    aliases = dict(str(item).split("=", 1) for item in details.get("aliases") or ())
    state.agreements[str(details.get("partner"))] = {
        "columns": details.get("columns"), "aliases": aliases,
        "max_records": details.get("max_records"),
        "allow_opaque": details.get("allow_opaque"), "change_id": details.get("change_id")}


REPLAY: dict[AuditTag, Callable[[ImpliedState, AuditEvent], None]] = {
    AuditTag.AGREEMENT_SET: _agreement_set,
    AuditTag.PARTNER_CREATE: _partner_create,
    AuditTag.PARTNER_DISABLE: _setter("partners", "disabled", True),
    AuditTag.PARTNER_CHANGE: _partner_changed,
    AuditTag.ACCOUNT_CREATE: _account_create,
    AuditTag.ACCOUNT_DISABLE: _setter("accounts", "disabled", True),
    AuditTag.ACCOUNT_ENABLE: _setter("accounts", "disabled", False),
    AuditTag.ACCOUNT_KEY_ADD: _key_added,
    AuditTag.ACCOUNT_KEY_REMOVE: _key_removed,
    AuditTag.ACCOUNT_TOTP_RESET: _totp_reset,
    AuditTag.ACCOUNT_TOTP_ENROL: _account_fields(totp=True, totp_pending=False),
    AuditTag.ACCOUNT_ALLOW_FROM: _account_fields(),
    AuditTag.ACCOUNT_MACHINE_PROPOSE: _grant_proposed,
    AuditTag.ACCOUNT_MACHINE_APPROVE: _grant_approved,
    AuditTag.AUTHORITY_PROPOSE: _change_proposed,
    AuditTag.AUTHORITY_APPROVE: _change_decided("approved"),
    AuditTag.AUTHORITY_WITHDRAW: _change_decided("withdrawn"),
    AuditTag.PARTNER_ENABLE: _setter("partners", "disabled", False),
    AuditTag.KEY_PROPOSE: _key_proposed,
    AuditTag.KEY_APPROVE: _setter("keys", "state", "approved"),
    AuditTag.KEY_REVOKE: _setter("keys", "state", "revoked"),
    AuditTag.UPLOAD_COMPLETE: _uploaded,
    AuditTag.FILE_SUPERSEDE: _setter("transfers", "state", "superseded"),
    AuditTag.FILE_WITHDRAW: _setter("transfers", "state", "withdrawn"),
    AuditTag.FILE_PURGE: _setter("transfers", "state", "purged"),
}


def replay(events: Iterable[AuditEvent]) -> ImpliedState:
    """The state the events imply, applied in log order."""
    state = ImpliedState()
    for event in events:
        tag = AuditTag(event.tag)
        check = CHECKS.get(tag)
        if check is not None:
            check(state, event)
        apply = REPLAY.get(tag)
        if apply is not None:
            apply(state, event)
    return state


@dataclass(frozen=True)
class Difference:
    """One place where the database and the log disagree."""

    table: str
    row: str
    field: str
    expected: object
    found: object

    def __str__(self) -> str:
        return (f"{self.table} row {self.row}: {self.field}: the log implies "
                f"{self.expected!r}, the database holds {self.found!r}")


def _diff(table: str, implied: State, found: State) -> Iterator[Difference]:
    for row in sorted(set(implied) | set(found)):
        if row not in found:
            yield Difference(table, row, "(row)", "present", "absent")
        elif row not in implied:
            yield Difference(table, row, "(row)", "absent", "present")
        else:
            for name, expected in implied[row].items():
                if found[row].get(name) != expected:
                    yield Difference(table, row, name, expected, found[row].get(name))


def database_state(session: Session) -> ImpliedState:
    """The same view of the database, for comparison."""
    state = ImpliedState()
    for partner in session.scalars(select(Partner)):
        state.partners[partner.slug] = {"disabled": partner.disabled,
                                        "retention_seconds": partner.retention_seconds,
                                        "max_downloads": partner.max_downloads}
    for account in session.scalars(select(Account).options(
            selectinload(Account.ssh_keys), selectinload(Account.totp))):
        state.accounts[account.username] = {
            "role": account.role.value, "partner": account.partner.slug if account.partner
            else None, "disabled": account.disabled,
            "ssh_keys": {key.fingerprint for key in account.ssh_keys},
            "totp": account.totp is not None,
            "totp_pending": account.totp is not None and account.totp.enrol_until is not None,
            "machine": account.machine, "allow_from": account.allow_from}
    for grant in session.scalars(select(MachineGrant)):
        state.grants[str(grant.id)] = {"account": grant.account.username,
                                       "allow_from": grant.allow_from,
                                       "state": grant.state.value}
    for change in session.scalars(select(AuthorityChange)):
        state.changes[str(change.id)] = {"kind": change.kind, "target": change.target,
                                         "state": change.state.value}
    for key in session.scalars(select(PartnerKey)):
        state.keys[str(key.id)] = {"partner": key.partner.slug, "kind": key.kind,
                                   "fingerprint": key.fingerprint, "state": key.state.value}
    for agreement in session.scalars(select(Agreement)):
        state.agreements[agreement.partner.slug] = {
            "columns": json.loads(agreement.columns), "aliases": json.loads(agreement.aliases),
            "max_records": agreement.max_records, "allow_opaque": agreement.allow_opaque,
            "change_id": agreement.change_id}
    for transfer in session.scalars(select(Transfer).execution_options(yield_per=1000)):
        state.transfers[transfer.id] = {"partner": transfer.partner.slug,
                                        "name": transfer.name, "size": transfer.size,
                                        "sha256": transfer.sha256,
                                        "state": transfer.state.value}
    return state


def reconcile(events: Iterable[AuditEvent], session: Session) -> list[Difference | Breach]:
    """Every event the state at its moment did not allow, then every difference between
    what ``events`` imply and what the database holds."""
    implied, found = replay(events), database_state(session)
    differences: list[Difference | Breach] = list(implied.breaches)
    for table, label in (("partners", "partners"), ("accounts", "accounts"),
                         ("keys", "partner_keys"), ("transfers", "transfers"),
                         ("grants", "machine_grants"), ("changes", "authority_changes"),
                         ("agreements", "agreements")):
        differences += _diff(label, getattr(implied, table), getattr(found, table))
    return differences
