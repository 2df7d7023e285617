"""Partner recipient keys, under the two-person rule.

An admin proposes a key; a different admin approves it; only approved keys receive new
files; revocation is immediate. Revoking a partner's last approved key purges the files
waiting for it, unless the admin keeps them until they expire.

Key types (docs/security.md, "Key types: one at a time"): a file is encrypted to one
type at a time, post-quantum or classical, never both, so a classical stanza cannot undo
what the post-quantum one protects. New files go to the partner's approved keys of the
type of its most recently approved key (its *receiving* keys). A key of the other type
is refused at proposal unless the admin declares a type switch; once a second admin
approves it, new files go to it alone, while the old keys stay approved, receive nothing
new and can be revoked without purging anything once the files encrypted to them have
expired: no waiting file is lost and there is no moment without a receiving key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import envelope, recipient_list, retention
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import (
    MAX_INTEGER,
    Account,
    KeyState,
    Partner,
    PartnerKey,
    Role,
    Transfer,
    TransferState,
)
from gateway.errors import ConflictError, NotFoundError, PolicyError
from gateway.partners import WAITING_KEPT, WAITING_PURGED, get_partner

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipientKey:
    """A partner recipient key as the services hand it out."""

    id: int
    partner: str
    kind: str
    fingerprint: str
    label: str
    recipient: str
    state: KeyState
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    revoked_by: str | None
    revoked_at: datetime | None
    # Flags for the admins deciding on a key: other partners that have it approved (the
    # same private key would open both partners' files), and whether new files go to it.
    also_approved_for: tuple[str, ...] = ()
    receiving: bool = False
    # For an approved key that no longer receives (its partner switched key type): the
    # files uploaded before the switch still waiting, and when the last of them expires,
    # which is how long the partner must keep the old private key.
    waiting_files: int = 0
    waiting_until: datetime | None = None

    @property
    def is_post_quantum(self) -> bool:
        return self.kind != "x25519"


def key_info(row: PartnerKey, *, also_approved_for: tuple[str, ...] = (),
             receiving: bool = False,
             waiting: tuple[int, datetime | None] = (0, None)) -> RecipientKey:
    return RecipientKey(row.id, row.partner.slug, row.kind, row.fingerprint, row.label,
                        row.recipient, row.state, row.proposer.username, row.proposed_at,
                        row.approver.username if row.approver else None, row.approved_at,
                        row.revoker.username if row.revoker else None, row.revoked_at,
                        also_approved_for, receiving, *waiting)


def active_admin(session: Session, actor: Actor) -> Account:
    """The acting admin's account, re-read: a disabled admin approves nothing."""
    account = session.get(Account, actor.account_id) if actor.account_id else None
    if account is None or account.role is not Role.ADMIN or account.disabled:
        raise PolicyError(f"{actor.name!r} is not an active admin")
    return account


def second_admin(app: App, session: Session, actor: Actor, approver: Account, *,
                 proposed_by: int, what: str, which: str,
                 details: dict[str, object]) -> bool:
    """The two-person rule for one approval of ``what`` (say "a key"): ``approver`` must not
    be its proposer, unless ``insecure_single_admin_key_approval`` allows that, which is
    logged and audited (``which`` names the proposal there, ``details`` go with the event).
    True when the proposer approved their own proposal."""
    if proposed_by != approver.id:
        return False
    if not app.settings.insecure_single_admin_key_approval:
        raise PolicyError(f"two-person rule: {what} must be approved by a different admin "
                          "than the one who proposed it")
    log.warning("insecure_single_admin_key_approval: %s approved their own %s", actor.name,
                which)
    app.audit.record(session, tag=AuditTag.SETTING_INSECURE_USE, actor=actor,
                     subject="setting:insecure_single_admin_key_approval", details=details)
    return True


def _get_key(session: Session, key_id: int) -> PartnerKey:
    if not 1 <= key_id <= MAX_INTEGER:
        raise NotFoundError(f"unknown key id {key_id}")
    key = session.scalar(select(PartnerKey).where(PartnerKey.id == key_id)
                         .with_for_update(of=PartnerKey))
    if key is None:
        raise NotFoundError(f"unknown key id {key_id}")
    return key


def approved_keys(session: Session, partner: Partner) -> list[PartnerKey]:
    """The keys new files for ``partner`` are encrypted to."""
    return list(session.scalars(select(PartnerKey).where(
        PartnerKey.partner_id == partner.id, PartnerKey.state == KeyState.APPROVED)
        .order_by(PartnerKey.id)))


def receiving_keys(keys: list[PartnerKey]) -> list[PartnerKey]:
    """Of a partner's approved ``keys``, those new files are encrypted to: the keys of the
    type of the most recently approved one, so that a file never mixes types and a type
    switch takes effect at the approval of the new key, with no gap."""
    if not keys:
        return []
    newest = max(keys, key=lambda k: (k.approved_at or k.proposed_at, k.id))
    return [key for key in keys if key.kind == newest.kind]


def _kind_name(kind: str) -> str:
    return "classical X25519" if kind == "x25519" else f"hybrid post-quantum {kind}"


def _type_switch_refusal(partner: str, old: str, new: str) -> str:
    return (f"partner {partner!r} receives files encrypted to {_kind_name(old)} keys and this "
            f"key is {_kind_name(new)}; a file is never encrypted to both. To move the "
            "partner to the new type, propose it as a type switch (CLI --switch-type, API "
            "\"switch_type\": true, console \"switch the partner to this key type\"): once a "
            "second admin approves it, new files go to it alone; the old keys stay approved "
            "for the files already waiting and can be revoked, purging nothing, once those "
            "have expired. Do not revoke the old keys first: revoking the last one purges "
            "the waiting files.")


def _also_approved_for(session: Session, fingerprint: str, partner_id: int) -> tuple[str, ...]:
    """Other partners that have the key with ``fingerprint`` approved."""
    return tuple(session.scalars(
        select(Partner.slug).join(PartnerKey, PartnerKey.partner_id == Partner.id)
        .where(PartnerKey.fingerprint == fingerprint, PartnerKey.state == KeyState.APPROVED,
               PartnerKey.partner_id != partner_id).order_by(Partner.slug).distinct()))


def published_recipients(partner: Partner, keys: list[PartnerKey]) -> str:
    """A partner's approved keys as the recipient list staff download and pin."""
    published = []
    for key in keys:
        assert key.approved_at is not None
        assert key.approver is not None
        published.append(recipient_list.PublishedKey(
            key.recipient, key.fingerprint, key.id, key.approved_at, key.proposer.username,
            key.approver.username))
    return recipient_list.render(partner.slug, published)


class PartnerKeyService:
    """Propose, approve, revoke and list partner recipient keys.

    Proposing, approving and revoking need an admin account's own proof (an SFTP-less
    step-up with its one-time code, or a console session with a fresh second factor):
    the local operator cannot change who receives files.
    """

    def __init__(self, app: App) -> None:
        self._app = app

    def propose(self, actor: Actor, *, partner: str, recipient: str, label: str = "",
                switch_type: bool = False) -> RecipientKey:
        """Validate ``recipient`` and record it as proposed by the acting admin.

        A key of another type than the partner's receiving keys is refused unless
        ``switch_type`` declares the switch. A key another partner has approved is
        accepted but flagged (``also_approved_for``, and in the audit event).
        """
        self._app.authz.require(actor, Permission.KEY_PROPOSE, subject=f"partner:{partner}")
        parsed = envelope.parse_recipient(recipient.strip())
        conflict = f"partner {partner!r} already has this key"
        with self._app.transaction(conflict=conflict) as session:
            proposer = active_admin(session, actor)
            partner_row = get_partner(session, partner)
            receiving = receiving_keys(approved_keys(session, partner_row))
            switching = bool(receiving) and receiving[0].kind != parsed.kind
            if switching and not switch_type:
                raise PolicyError(_type_switch_refusal(partner, receiving[0].kind,
                                                       parsed.kind))
            shared = _also_approved_for(session, parsed.fingerprint, partner_row.id)
            key = PartnerKey(partner_id=partner_row.id, recipient=str(parsed), kind=parsed.kind,
                             fingerprint=parsed.fingerprint, label=label,
                             state=KeyState.PROPOSED, proposed_by=proposer.id,
                             proposed_at=self._app.clock(), partner=partner_row,
                             proposer=proposer)
            session.add(key)
            session.flush()
            extra: dict[str, object] = {}
            if switching:
                extra.update(switch_from=receiving[0].kind, switch_to=parsed.kind)
            if shared:
                extra["also_approved_for"] = list(shared)
            self._record(session, AuditTag.KEY_PROPOSE, key, actor, extra)
            return key_info(key, also_approved_for=shared)

    def approve(self, actor: Actor, *, key_id: int) -> RecipientKey:
        """Approve a proposed key; the approver must not be the proposer."""
        self._app.authz.require(actor, Permission.KEY_APPROVE, subject=f"key:{key_id}")
        with self._app.transaction() as session:
            approver = active_admin(session, actor)
            key = _get_key(session, key_id)
            # Approvals for one partner are serialised, so that "which type receives" has
            # one answer.
            get_partner(session, key.partner.slug, for_update=True)
            if key.state is not KeyState.PROPOSED:
                raise ConflictError(f"key {key_id} is {key.state.value}, not proposed")
            single_admin = second_admin(self._app, session, actor, approver,
                                        proposed_by=key.proposed_by, what="a key",
                                        which=f"key {key_id}",
                                        details={"key_id": key.id,
                                                 "partner": key.partner.slug})
            # A key of another type is a type switch, declared at proposal (or the partner's
            # keys changed since): new files go to this key's type from now on, and the
            # old keys stay approved, receiving nothing, for the files already waiting.
            retiring = [o.id for o in approved_keys(session, key.partner)
                        if o.kind != key.kind]
            key.state, key.approved_at, key.approver = (KeyState.APPROVED, self._app.clock(),
                                                        approver)
            extra: dict[str, object] = {}
            if retiring:
                extra.update(switch_to=key.kind, no_new_files_for=retiring)
            if single_admin:
                extra["insecure_single_admin_key_approval"] = True
            self._record(session, AuditTag.KEY_APPROVE, key, actor, extra)
            return key_info(key, receiving=True)

    def revoke(self, actor: Actor, *, key_id: int, keep_waiting: bool = False) -> RecipientKey:
        """Revoke a proposed or approved key; it receives no new file from now on.

        When it was the partner's last approved key, the files waiting for the partner
        are purged at once (each purge audited), unless ``keep_waiting``: then they stay
        until they expire, and the revocation's audit event says so.
        """
        self._app.authz.require(actor, Permission.KEY_REVOKE, subject=f"key:{key_id}")
        with self._app.transaction() as session:
            admin = active_admin(session, actor)
            key = _get_key(session, key_id)
            # Revocations and approvals for one partner are serialised, so "was this the
            # last approved key" has one answer.
            partner = get_partner(session, key.partner.slug, for_update=True)
            if key.state is KeyState.REVOKED:
                raise ConflictError(f"key {key_id} is already revoked")
            was_approved = key.state is KeyState.APPROVED
            key.state, key.revoked_at, key.revoker = KeyState.REVOKED, self._app.clock(), admin
            last = was_approved and not approved_keys(session, partner)
            extra: dict[str, object] = {}
            if last:
                extra["waiting_files"] = WAITING_KEPT if keep_waiting else WAITING_PURGED
            self._record(session, AuditTag.KEY_REVOKE, key, actor, extra)
            purged = retention.purge_waiting(
                self._app, session, partner_id=partner.id, actor=actor,
                reason=retention.KEY_REVOKED, details={"key_id": key.id},
            ) if last and not keep_waiting else []
            info = key_info(key)
        retention.delete_purged(self._app, purged)
        return info

    def published(self, actor: Actor, partner: str) -> str:
        """An active partner's recipient list (``/.recipients/<partner>``), for staff: its
        receiving keys, the ones the gateway itself encrypts new files to.

        Those who may upload for a partner may see whom its files are encrypted to.
        """
        self._app.authz.require(actor, Permission.FILE_UPLOAD, subject=f"partner:{partner}")
        with self._app.read() as session:
            partner_row = session.scalar(select(Partner).where(Partner.slug == partner))
            if partner_row is None or partner_row.disabled:
                raise NotFoundError("no such partner")
            # Staff pin what they read here: never publish a row the gateway did not write.
            self._app.integrity.verify(partner_row)
            approved = approved_keys(session, partner_row)
            for key in approved:
                self._app.integrity.verify(key)
            return published_recipients(partner_row, receiving_keys(approved))

    def all(self, actor: Actor, *, partner: str | None = None) -> list[RecipientKey]:
        self._app.authz.require(actor, Permission.KEY_READ)
        with self._app.read() as session:
            wanted = get_partner(session, partner).id if partner is not None else None
            # Every key is read (a registry has tens): the flags compare across partners.
            rows = list(session.scalars(select(PartnerKey).order_by(PartnerKey.id)))
            receiving = {partner_id: _receiving(rows, partner_id)
                         for partner_id in {row.partner_id for row in rows}}
            receiving_ids = {key.id for keys in receiving.values() for key in keys}
            retiring = {partner_id: [r for r in rows if r.partner_id == partner_id
                                     and r.state is KeyState.APPROVED
                                     and r.id not in receiving_ids]
                        for partner_id in receiving}
            waiting = {partner_id: _waiting_before(session, partner_id, receiving[partner_id],
                                                   old)
                       for partner_id, old in retiring.items() if old}
            return [key_info(row, also_approved_for=_shared(rows, row),
                             receiving=row.id in receiving_ids,
                             waiting=(waiting.get(row.partner_id, (0, None))
                                      if row.state is KeyState.APPROVED
                                      and row.id not in receiving_ids else (0, None)))
                    for row in rows if wanted is None or row.partner_id == wanted]

    def _record(self, session: Session, tag: AuditTag, key: PartnerKey, actor: Actor,
                extra: dict[str, object] | None = None) -> None:
        details: dict[str, object] = {"key_id": key.id, "partner": key.partner.slug,
                                      "kind": key.kind, "fingerprint": key.fingerprint,
                                      **(extra or {})}
        self._app.audit.record(session, tag=tag, actor=actor, subject=f"key:{key.id}",
                               details=details)


def _receiving(rows: list[PartnerKey], partner_id: int) -> list[PartnerKey]:
    return receiving_keys([r for r in rows if r.partner_id == partner_id
                           and r.state is KeyState.APPROVED])


def _shared(rows: list[PartnerKey], row: PartnerKey) -> tuple[str, ...]:
    """For a key not yet revoked: the other partners among ``rows`` that have it approved."""
    if row.state is KeyState.REVOKED:
        return ()
    return tuple(sorted({r.partner.slug for r in rows if r.fingerprint == row.fingerprint
                         and r.state is KeyState.APPROVED and r.partner_id != row.partner_id}))


def _approved(key: PartnerKey) -> datetime:
    return key.approved_at or key.proposed_at


def _waiting_before(session: Session, partner_id: int, receiving: list[PartnerKey],
                    retiring: list[PartnerKey]) -> tuple[int, datetime | None]:
    """How many of a partner's waiting files were uploaded before its receiving keys'
    type took over (the first approval of that type after the last of the other), and
    when the last of them expires."""
    last_old = max(_approved(key) for key in retiring)
    switched = min((_approved(key) for key in receiving if _approved(key) > last_old),
                   default=last_old)
    count, last = session.execute(select(func.count(), func.max(Transfer.expires_at)).where(
        Transfer.partner_id == partner_id, Transfer.state == TransferState.AVAILABLE,
        Transfer.created_at <= switched)).one()
    return int(count), last
