"""What a notification says, built from counts, expiry times and audit events alone.

The upload event names the file; nothing here reads that name (or its size): a files
message is counted from the transfers table at planning time. Fields taken from an
audit event are escaped and cut short, so a name holding a newline cannot add a header
line or a forged sentence to a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.audit.events import escape_text
from gateway.audit.tags import AuditTag

PAYLOAD_VERSION = 1
MAX_FIELD = 80
# The most lines one admin digest lists; the rest are counted.
MAX_DIGEST_LINES = 20

APPROVAL_TAGS = (AuditTag.KEY_PROPOSE, AuditTag.ACCOUNT_MACHINE_PROPOSE,
                 AuditTag.AUTHORITY_PROPOSE)
ALARM_TAGS = (AuditTag.AUDIT_WITNESS_QUORUM_MISSED, AuditTag.AUDIT_WITNESS_REFUSED,
              AuditTag.INTEGRITY_VIOLATION)
# Told to the account itself: a passkey added to it (a sign-in factor it should know of).
OWN_TAGS = (AuditTag.ACCOUNT_PASSKEY_ADD,)
WATCHED_TAGS = (AuditTag.UPLOAD_COMPLETE, *APPROVAL_TAGS, *ALARM_TAGS, *OWN_TAGS)


@dataclass(frozen=True)
class Message:
    """One notification: the subject line, the text, and the webhook's JSON payload."""

    topic: str
    subject: str
    text: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    # Whether it says everything an unsent older message on its topic said (a count of
    # files waiting does; a digest of other events does not).
    supersedes: bool = False

    def body(self) -> str:
        """What the outbox keeps: the payload with the text, as JSON."""
        return json.dumps({**self.payload, "subject": self.subject, "text": self.text},
                          sort_keys=True)


@dataclass(frozen=True)
class Notice:
    """One line of an admin digest: an approval awaited or an alarm raised."""

    kind: str  # "approval" or "alarm"
    event: str  # the audit tag
    index: int  # the audit entry, for `blindpost audit show`
    line: str
    # Who proposed it: an admin is not asked to approve their own proposal.
    actor: str = ""


def short_time(moment: datetime) -> str:
    """``5 Dec 14:00 UTC``: enough to plan by, in one time zone for everyone."""
    utc = moment.astimezone(UTC)
    return f"{utc.day} {utc:%b %H:%M} UTC"


def files_waiting(partner: str, *, count: int, first_expiry: datetime) -> Message:
    """The message to a partner's people: how many files wait and when the first expires."""
    noun = "file" if count == 1 else "files"
    summary = f"{count} {noun} for {partner}, the first expires {short_time(first_expiry)}"
    text = (f"{summary}.\n\nFetch them with `blindpost fetch` or your SFTP client before "
            "then. This message names no file on purpose.\n\n"
            "You receive it because notifications are on for your account; your "
            "registry's admin can turn them off.\n")
    payload = {"version": PAYLOAD_VERSION, "kind": "files-waiting", "partner": partner,
               "count": count, "first_expires_at": first_expiry.astimezone(UTC).isoformat()}
    return Message(topic=f"files:{partner}", subject=f"Blindpost: {summary}", text=text,
                   payload=payload, supersedes=True)


def passkey_added(username: str, *, at: datetime) -> Message:
    """The message to an account a passkey was added to: when, and what to do if it was
    not them (no name of the passkey, nothing about any file)."""
    when = short_time(at)
    text = (f"A passkey was added to your Blindpost account {escape_text(username)} on "
            f"{when}.\n\nIf that was you, there is nothing to do. If it was not, tell your "
            "registry now: they can remove it and lock the account.\n\n"
            "You receive it because notifications are on for your account.\n")
    payload = {"version": PAYLOAD_VERSION, "kind": "passkey-added",
               "at": at.astimezone(UTC).isoformat()}
    return Message(topic=f"passkey:{username}"[:100],
                   subject="Blindpost: a passkey was added to your account", text=text,
                   payload=payload)


def notice(index: int, tag: str, details: Mapping[str, Any], *,
           actor: str = "") -> Notice | None:
    """The digest line for an audit event, or None for an event no admin is told of."""
    line = _LINES.get(tag)
    if line is None:
        return None
    kind = "approval" if tag in APPROVAL_TAGS else "alarm"
    return Notice(kind=kind, event=tag, index=index, line=line(_Fields(details)),
                  actor=actor if kind == "approval" else "")


def admin_digest(notices: list[Notice]) -> Message:
    """One message to each admin for a round's approvals and alarms."""
    approvals = sum(1 for n in notices if n.kind == "approval")
    alarms = len(notices) - approvals
    parts = ([f"{alarms} alarm{'s' if alarms != 1 else ''}"] if alarms else []) + (
        [f"{approvals} approval{'s' if approvals != 1 else ''} waiting"] if approvals else [])
    summary = ", ".join(parts)
    shown = sorted(notices, key=lambda n: (n.kind != "alarm", n.index))[:MAX_DIGEST_LINES]
    lines = [f"- {n.line} (audit entry {n.index})" for n in shown]
    if len(notices) > len(shown):
        lines.append(f"- and {len(notices) - len(shown)} more: `blindpost audit tail`")
    text = (f"Blindpost: {summary}.\n\n" + "\n".join(lines) + "\n\n"
            "An approval takes a second admin's fresh proof: see the console or "
            "`blindpost key list` and `blindpost user show NAME`.\n")
    payload = {"version": PAYLOAD_VERSION, "kind": "admin",
               "events": [{"kind": n.kind, "event": n.event, "audit_index": n.index,
                           "line": n.line} for n in notices]}
    return Message(topic="admin", subject=f"Blindpost: {summary}", text=text,
                   payload=payload)


class _Fields:
    """An event's details, each read as short printable text."""

    def __init__(self, details: Mapping[str, Any]) -> None:
        self._details = details

    def __getitem__(self, key: str) -> str:
        value = self._details.get(key)
        if isinstance(value, list):
            value = ", ".join(str(item) for item in value)
        text = escape_text("?" if value is None else str(value))
        return text if len(text) <= MAX_FIELD else text[:MAX_FIELD - 1] + "…"


_LINES = {
    AuditTag.KEY_PROPOSE.value: lambda f: (
        f"recipient key {f['key_id']} for partner {f['partner']} awaits approval "
        f"(fingerprint {f['fingerprint']})"),
    AuditTag.ACCOUNT_MACHINE_PROPOSE.value: lambda f: (
        f"machine grant {f['grant_id']} ({f['change']}, from {f['allow_from']}) awaits "
        "approval"),
    AuditTag.AUTHORITY_PROPOSE.value: lambda f: (
        f"authority change {f['change_id']} ({f['kind']} for {f['target']}) awaits approval"),
    AuditTag.AUDIT_WITNESS_QUORUM_MISSED.value: lambda f: (
        f"the audit checkpoint of {f['size']} entries has {f['cosigned']} of the "
        f"{f['quorum']} witness cosignatures required (missing: {f['missing']})"),
    AuditTag.AUDIT_WITNESS_REFUSED.value: lambda f: (
        f"AUDIT LOG REWRITE? witness {f['witness']} refused the checkpoint of {f['size']} "
        f"entries, having cosigned {f['witness_size']}: run `blindpost audit verify`"),
    AuditTag.INTEGRITY_VIOLATION.value: lambda f: (
        f"integrity violation in {f['table']} row {f['row']}: run `blindpost integrity "
        "check`"),
}
