"""Partners: the organisations that receive files, each with one inbox."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import MAX_INTEGER, Partner
from gateway.errors import ConflictError, NotFoundError, UsageError

if TYPE_CHECKING:
    from gateway.app import App

# Slugs name SFTP folders; keep them to characters that need no quoting anywhere.
SLUG_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")


def check_slug(slug: str) -> str:
    """Return ``slug`` if it is a valid partner slug, else raise :class:`UsageError`."""
    if not SLUG_PATTERN.fullmatch(slug):
        raise UsageError(f"invalid partner slug {slug!r}: use 1-64 lowercase letters, "
                         "digits and inner hyphens")
    return slug


@dataclass(frozen=True)
class PartnerInfo:
    """A partner as the services hand it out."""

    id: int
    slug: str
    name: str
    retention_days: int
    max_downloads: int | None
    disabled: bool
    created_at: datetime


def partner_info(row: Partner) -> PartnerInfo:
    return PartnerInfo(row.id, row.slug, row.name, row.retention_days, row.max_downloads,
                       row.disabled, row.created_at)


def get_partner(session: Session, slug: str, *, for_update: bool = False) -> Partner:
    """Load a partner by slug or raise :class:`NotFoundError`.

    ``for_update`` locks the row until the transaction ends (PostgreSQL; SQLite's
    writers are serialised already), for a check-then-write on it.
    """
    query = select(Partner).where(Partner.slug == slug)
    partner = session.scalar(query.with_for_update() if for_update else query)
    if partner is None:
        raise NotFoundError(f"unknown partner {slug!r}")
    return partner


@dataclass(frozen=True)
class PartnerChange:
    """What to change on a partner; None keeps the current value."""

    name: str | None = None
    retention_days: int | None = None
    max_downloads: int | None = None
    unlimited_downloads: bool = False


class PartnerService:
    """Create, list, show and disable partners."""

    def __init__(self, app: App) -> None:
        self._app = app

    def add(self, actor: Actor, *, slug: str, name: str | None = None,
            retention_days: int | None = None, max_downloads: int | None = None) -> PartnerInfo:
        """Create a partner; retention defaults to the setting and is capped by the maximum."""
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        retention = (self._app.settings.default_retention_days if retention_days is None
                     else retention_days)
        self._check_limits(retention, max_downloads)
        check_slug(slug)
        # The unique constraint on the slug decides "create if absent", so two admins
        # adding the same partner at once get the same answer as one after the other.
        with self._app.transaction(conflict=f"partner {slug!r} already exists") as session:
            partner = Partner(slug=slug, name=name or slug, retention_days=retention,
                              max_downloads=max_downloads, disabled=False,
                              created_at=self._app.clock())
            session.add(partner)
            session.flush()
            self._app.audit.record(session, tag=AuditTag.PARTNER_CREATE, actor=actor,
                                   subject=f"partner:{slug}",
                                   details={"retention_days": retention,
                                            "max_downloads": max_downloads})
            return partner_info(partner)

    def _check_limits(self, retention: int, max_downloads: int | None) -> None:
        ceiling = self._app.settings.max_retention_days
        if not 1 <= retention <= ceiling:
            raise UsageError(f"retention must be between 1 and {ceiling} days "
                             f"(max_retention_days), got {retention}")
        if max_downloads is not None and not 1 <= max_downloads <= MAX_INTEGER:
            raise UsageError(f"max downloads must be between 1 and {MAX_INTEGER}, "
                             f"got {max_downloads}")

    def change(self, actor: Actor, *, slug: str, change: PartnerChange) -> PartnerInfo:
        """Change a partner's name, retention or download limit (for files sent from now).

        Files already waiting keep the expiry and limit they were stored with.
        """
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        with self._app.transaction() as session:
            partner = get_partner(session, slug, for_update=True)
            old = partner_info(partner)
            retention = change.retention_days or partner.retention_days
            limit = None if change.unlimited_downloads else (change.max_downloads
                                                             or partner.max_downloads)
            self._check_limits(retention, limit)
            partner.name = (change.name or partner.name).strip()[:200] or slug
            partner.retention_days, partner.max_downloads = retention, limit
            new = partner_info(partner)
            details = {field: {"old": getattr(old, field), "new": getattr(new, field)}
                       for field in ("name", "retention_days", "max_downloads")
                       if getattr(old, field) != getattr(new, field)}
            if details:
                self._app.audit.record(session, tag=AuditTag.PARTNER_CHANGE, actor=actor,
                                       subject=f"partner:{slug}", details={
                                           f"{k}_{side}": v[side] for k, v in details.items()
                                           for side in ("old", "new")})
            return new

    def all(self, actor: Actor) -> list[PartnerInfo]:
        self._app.authz.require(actor, Permission.PARTNER_READ)
        with self._app.read() as session:
            return [partner_info(row) for row in
                    session.scalars(select(Partner).order_by(Partner.slug))]

    def get(self, actor: Actor, slug: str) -> PartnerInfo:
        self._app.authz.require(actor, Permission.PARTNER_READ, subject=f"partner:{slug}")
        with self._app.read() as session:
            return partner_info(get_partner(session, slug))

    def disable(self, actor: Actor, *, slug: str) -> PartnerInfo:
        """Disable a partner: its accounts can no longer sign in and staff cannot upload."""
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        with self._app.transaction() as session:
            partner = get_partner(session, slug, for_update=True)
            if partner.disabled:
                raise ConflictError(f"partner {slug!r} is already disabled")
            partner.disabled = True
            self._app.audit.record(session, tag=AuditTag.PARTNER_DISABLE, actor=actor,
                                   subject=f"partner:{slug}")
            return partner_info(partner)
