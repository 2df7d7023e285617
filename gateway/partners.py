"""Partners: the organisations that receive files, each with one inbox."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.db.models import Partner
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


def get_partner(session: Session, slug: str) -> Partner:
    """Load a partner by slug or raise :class:`NotFoundError`."""
    partner = session.scalar(select(Partner).where(Partner.slug == slug))
    if partner is None:
        raise NotFoundError(f"unknown partner {slug!r}")
    return partner


class PartnerService:
    """Create, list, show and disable partners."""

    def __init__(self, app: App) -> None:
        self._app = app

    def add(self, *, actor: Actor, slug: str, name: str | None = None,
            retention_days: int | None = None, max_downloads: int | None = None) -> Partner:
        """Create a partner; retention defaults to the setting and is capped by the maximum."""
        settings = self._app.settings
        retention = settings.default_retention_days if retention_days is None else retention_days
        if not 1 <= retention <= settings.max_retention_days:
            raise UsageError(f"retention must be between 1 and {settings.max_retention_days} "
                             f"days (max_retention_days), got {retention}")
        if max_downloads is not None and max_downloads < 1:
            raise UsageError("max downloads must be at least 1")
        with self._app.transaction() as session:
            check_slug(slug)
            if session.scalar(select(Partner.id).where(Partner.slug == slug)) is not None:
                raise ConflictError(f"partner {slug!r} already exists")
            partner = Partner(slug=slug, name=name or slug, retention_days=retention,
                              max_downloads=max_downloads, disabled=False,
                              created_at=self._app.clock())
            session.add(partner)
            session.flush()
            self._app.audit.record(session, tag=AuditTag.PARTNER_CREATE, actor=actor.name,
                                   subject=f"partner:{slug}",
                                   details={"retention_days": retention,
                                            "max_downloads": max_downloads,
                                            **actor.audit_details()})
        return partner

    def all(self) -> Sequence[Partner]:
        with self._app.transaction() as session:
            return session.scalars(select(Partner).order_by(Partner.slug)).all()

    def get(self, slug: str) -> Partner:
        with self._app.transaction() as session:
            return get_partner(session, slug)

    def disable(self, *, actor: Actor, slug: str) -> Partner:
        """Disable a partner: its accounts can no longer sign in and staff cannot upload."""
        with self._app.transaction() as session:
            partner = get_partner(session, slug)
            if partner.disabled:
                raise ConflictError(f"partner {slug!r} is already disabled")
            partner.disabled = True
            self._app.audit.record(session, tag=AuditTag.PARTNER_DISABLE, actor=actor.name,
                                   subject=f"partner:{slug}", details=actor.audit_details())
        return partner
