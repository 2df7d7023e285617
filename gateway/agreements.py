"""Data-sharing agreements: what each partner may receive, changed only by two admins.

An agreement grants (it decides which data elements may leave the registry), so it
changes like every grant of authority (:mod:`gateway.authority`): one admin proposes
the terms (a change of kind ``agreement-set`` that grants nothing), a different admin
approves it with a fresh second factor, and the approval writes the partner's sealed
``agreements`` row in the same transaction, with an ``agreement:set`` event naming both.
Uploads read it through :meth:`AgreementService.terms`, which verifies the seal and that
the row is the current version the audit log records: a looser agreement put back from
an old copy, or an injected one, grants nothing (the upload is refused).

A partner without an agreement: its uploads are allowed and recorded (each file's data
elements and record count go in its upload event, sealed transfer row and the exposure
report) unless the setting ``require_agreement`` is on, which refuses them. See
docs/agreements.md for why that is the default and when to turn the setting on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import rfc8785
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.agreement_terms import Terms, make_terms
from gateway.audit import AuditTag
from gateway.authority import AuthorityChangeInfo, ChangeKind, Outcome
from gateway.authz import Permission
from gateway.db.models import Agreement, AuthorityChange, Partner
from gateway.errors import NotFoundError
from gateway.partners import get_partner

if TYPE_CHECKING:
    from gateway.app import App


@dataclass(frozen=True)
class AgreementInfo:
    """A partner's agreement in force, and who decided it."""

    partner: str
    columns: tuple[str, ...]
    aliases: dict[str, str]
    max_records: int | None
    allow_opaque: bool
    change_id: int
    approved_at: datetime
    proposed_by: str
    approved_by: str | None

    @property
    def terms(self) -> Terms:
        return Terms(self.partner, self.columns, self.aliases, self.max_records,
                     self.allow_opaque, self.change_id)


def _params(terms: Terms) -> dict[str, Any]:
    # Plain values only (audit details hold no nested objects): aliases as ALIAS=COLUMN.
    return {"columns": list(terms.columns),
            "aliases": [f"{alias}={target}" for alias, target in sorted(terms.aliases.items())],
            "max_records": terms.max_records, "allow_opaque": terms.allow_opaque}


def _json(value: object) -> str:
    return rfc8785.dumps(value).decode("utf-8")  # type: ignore[arg-type]  # Plain values.


class AgreementService:
    """Propose, apply and read data-sharing agreements."""

    def __init__(self, app: App) -> None:
        self._app = app

    def propose(self, actor: Actor, *, partner: str, columns: Sequence[str],
                aliases: dict[str, str] | None = None, max_records: int | None = None,
                allow_opaque: bool = False) -> AuthorityChangeInfo:
        """Propose ``partner``'s agreement; it grants nothing until a second admin approves."""
        terms = make_terms(partner, columns=columns, aliases=aliases, max_records=max_records,
                           allow_opaque=allow_opaque)
        with self._app.read() as session:
            get_partner(session, partner)
        return self._app.authority.propose(actor, kind=ChangeKind.AGREEMENT_SET,
                                           target=partner, params=_params(terms))

    def apply_set(self, session: Session, actor: Actor, change: AuthorityChange,
                  params: dict[str, Any]) -> Outcome:
        """Write the agreement a second admin approved (in the approval's transaction)."""
        partner = get_partner(session, change.target)
        self._app.integrity.verify(partner)
        row = session.get(Agreement, partner.id, with_for_update=True)
        aliases = dict(item.split("=", 1) for item in params["aliases"])
        values = {"columns": _json(params["columns"]), "aliases": _json(aliases),
                  "max_records": params["max_records"],
                  "allow_opaque": bool(params["allow_opaque"]), "change_id": change.id,
                  "approved_at": self._app.clock()}
        if row is None:
            session.add(Agreement(partner_id=partner.id, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
        session.flush()
        self._app.audit.record(session, tag=AuditTag.AGREEMENT_SET, actor=actor,
                               subject=f"partner:{partner.slug}",
                               details={"partner": partner.slug, "change_id": change.id,
                                        "proposed_by": change.proposer.username,
                                        **params})
        return Outcome(extra={"partner": partner.slug})

    def terms(self, session: Session, partner: Partner) -> Terms | None:
        """The partner's agreement in force, verified and current; None without one."""
        row = session.get(Agreement, partner.id)
        if row is None:
            return None
        # A forged or rolled-back row raises: the upload is refused, never let through.
        self._app.integrity.verify(row)
        return Terms(partner.slug, tuple(json.loads(row.columns)), json.loads(row.aliases),
                     row.max_records, row.allow_opaque, row.change_id)

    def show(self, actor: Actor, partner: str) -> AgreementInfo | None:
        """The partner's agreement in force (None without one), for admins and auditors."""
        self._app.authz.require(actor, Permission.PARTNER_READ, subject=f"partner:{partner}")
        return self._show(partner)

    def published(self, actor: Actor, partner: str) -> Terms | None:
        """The terms staff check a file against before sending it (``/.agreements``)."""
        self._app.authz.require(actor, Permission.FILE_UPLOAD, subject=f"partner:{partner}")
        with self._app.read() as session:
            row = get_partner(session, partner)
            if row.disabled:
                raise NotFoundError(f"no active partner {partner!r}")
            return self.terms(session, row)

    def _show(self, partner: str) -> AgreementInfo | None:
        with self._app.read() as session:
            partner_row = get_partner(session, partner)
            terms = self.terms(session, partner_row)
            if terms is None:
                return None
            agreement = session.get(Agreement, partner_row.id)
            change = session.scalar(select(AuthorityChange).where(
                AuthorityChange.id == terms.change_id))
            assert agreement is not None
            assert change is not None
            return AgreementInfo(partner, terms.columns, dict(terms.aliases),
                                 terms.max_records, terms.allow_opaque, change.id,
                                 agreement.approved_at, change.proposer.username,
                                 change.approver.username if change.approver else None)
