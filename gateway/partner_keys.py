"""Partner recipient keys, under the two-person rule.

An admin proposes a key; a different admin approves it; only approved keys receive new
files; revocation is immediate. A partner's approved keys are all post-quantum or all
classical, so that no file mixes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import envelope
from gateway.accounts import get_account
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.db.models import Account, KeyState, Partner, PartnerKey, Role
from gateway.errors import ConflictError, NotFoundError, PolicyError
from gateway.partners import get_partner

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)


def _admin(session: Session, username: str) -> Account:
    account = get_account(session, username)
    if account.role is not Role.ADMIN or account.disabled:
        raise PolicyError(f"{username!r} is not an active admin")
    return account


def _get_key(session: Session, key_id: int) -> PartnerKey:
    key = session.get(PartnerKey, key_id)
    if key is None:
        raise NotFoundError(f"unknown key id {key_id}")
    return key


def approved_keys(session: Session, partner: Partner) -> list[PartnerKey]:
    """The keys new files for ``partner`` are encrypted to."""
    return list(session.scalars(select(PartnerKey).where(
        PartnerKey.partner_id == partner.id, PartnerKey.state == KeyState.APPROVED)
        .order_by(PartnerKey.id)))


class PartnerKeyService:
    """Propose, approve, revoke and list partner recipient keys."""

    def __init__(self, app: App) -> None:
        self._app = app

    def propose(self, *, partner: str, recipient: str, by: str, label: str = "",
                actor: Actor | None = None) -> PartnerKey:
        """Validate ``recipient`` and record it as proposed by admin ``by``."""
        parsed = envelope.parse_recipient(recipient.strip())
        with self._app.transaction() as session:
            proposer = _admin(session, by)
            partner_row = get_partner(session, partner)
            if session.scalar(select(PartnerKey.id).where(
                    PartnerKey.partner_id == partner_row.id,
                    PartnerKey.recipient == str(parsed))):
                raise ConflictError(f"partner {partner!r} already has this key")
            key = PartnerKey(partner_id=partner_row.id, recipient=str(parsed), kind=parsed.kind,
                             fingerprint=parsed.fingerprint, label=label,
                             state=KeyState.PROPOSED, proposed_by=proposer.id,
                             proposed_at=self._app.clock(), partner=partner_row)
            session.add(key)
            session.flush()
            self._record(session, AuditTag.KEY_PROPOSE, key, partner_row, by, actor)
        return key

    def approve(self, *, key_id: int, by: str, actor: Actor | None = None) -> PartnerKey:
        """Approve a proposed key; the approver must not be the proposer."""
        settings = self._app.settings
        with self._app.transaction() as session:
            approver = _admin(session, by)
            key = _get_key(session, key_id)
            if key.state is not KeyState.PROPOSED:
                raise ConflictError(f"key {key_id} is {key.state.value}, not proposed")
            single_admin = key.proposed_by == approver.id
            if single_admin and not settings.insecure_single_admin_key_approval:
                raise PolicyError("two-person rule: a key must be approved by a different "
                                  "admin than the one who proposed it")
            others = approved_keys(session, key.partner)
            if any(o.kind != key.kind for o in others):
                raise PolicyError(f"partner {key.partner.slug!r} has approved {others[0].kind} "
                                  f"keys; a {key.kind} key would mix post-quantum and classical "
                                  "recipients. Revoke the others first.")
            key.state, key.approved_by, key.approved_at = (KeyState.APPROVED, approver.id,
                                                           self._app.clock())
            extra: dict[str, object] = {}
            if single_admin:
                log.warning("insecure_single_admin_key_approval: %s approved their own key %d",
                            by, key_id)
                extra["insecure_single_admin_key_approval"] = True
                self._app.audit.record(session, tag=AuditTag.SETTING_INSECURE_USE, actor=by,
                                       subject="setting:insecure_single_admin_key_approval",
                                       details={"key_id": key.id, "partner": key.partner.slug})
            self._record(session, AuditTag.KEY_APPROVE, key, key.partner, by, actor, extra)
        return key

    def revoke(self, *, key_id: int, by: str, actor: Actor | None = None) -> PartnerKey:
        """Revoke a proposed or approved key; it receives no new file from now on."""
        with self._app.transaction() as session:
            admin = _admin(session, by)
            key = _get_key(session, key_id)
            if key.state is KeyState.REVOKED:
                raise ConflictError(f"key {key_id} is already revoked")
            key.state, key.revoked_by, key.revoked_at = (KeyState.REVOKED, admin.id,
                                                         self._app.clock())
            self._record(session, AuditTag.KEY_REVOKE, key, key.partner, by, actor)
        return key

    def all(self, *, partner: str | None = None) -> Sequence[PartnerKey]:
        with self._app.transaction() as session:
            query = select(PartnerKey).order_by(PartnerKey.id)
            if partner is not None:
                query = query.where(PartnerKey.partner_id == get_partner(session, partner).id)
            return session.scalars(query).all()

    def _record(self, session: Session, tag: AuditTag, key: PartnerKey, partner: Partner,
                by: str, actor: Actor | None, extra: dict[str, object] | None = None) -> None:
        details: dict[str, object] = {"key_id": key.id, "partner": partner.slug,
                                      "kind": key.kind, "fingerprint": key.fingerprint,
                                      **(extra or {})}
        if actor is not None:
            details.update(actor.audit_details())
        self._app.audit.record(session, tag=tag, actor=by, subject=f"key:{key.id}",
                               details=details)

