"""Partners: the organisations that receive files, each with one inbox."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import retention
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import MAX_INTEGER, Partner
from gateway.durations import format_duration
from gateway.errors import ConflictError, NotFoundError, UsageError

if TYPE_CHECKING:
    from gateway.app import App

# Slugs name SFTP folders; keep them to characters that need no quoting anywhere.
SLUG_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
# What partner:disable and key:revoke events say became of the files waiting.
WAITING_PURGED = "purged"
WAITING_KEPT = "kept until they expire"


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
    retention: str
    retention_seconds: int
    max_downloads: int | None
    disabled: bool
    created_at: datetime


def partner_info(row: Partner) -> PartnerInfo:
    return PartnerInfo(row.id, row.slug, row.name, format_duration(row.retention_seconds),
                       row.retention_seconds, row.max_downloads, row.disabled, row.created_at)


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
    retention_seconds: int | None = None
    max_downloads: int | None = None
    unlimited_downloads: bool = False


class PartnerService:
    """Create, list, show, change, disable and enable partners."""

    def __init__(self, app: App) -> None:
        self._app = app

    def add(self, actor: Actor, *, slug: str, name: str | None = None,
            retention_seconds: int | None = None,
            max_downloads: int | None = None) -> PartnerInfo:
        """Create a partner; retention defaults to the setting and is capped by the maximum."""
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        retention_seconds = (self._app.settings.default_retention_seconds
                             if retention_seconds is None else retention_seconds)
        self._check_limits(retention_seconds, max_downloads)
        check_slug(slug)
        # The unique constraint on the slug decides "create if absent", so two admins
        # adding the same partner at once get the same answer as one after the other.
        with self._app.transaction(conflict=f"partner {slug!r} already exists") as session:
            partner = Partner(slug=slug, name=name or slug, retention_seconds=retention_seconds,
                              max_downloads=max_downloads, disabled=False,
                              created_at=self._app.clock())
            session.add(partner)
            session.flush()
            self._app.audit.record(session, tag=AuditTag.PARTNER_CREATE, actor=actor,
                                   subject=f"partner:{slug}",
                                   details={"retention": format_duration(retention_seconds),
                                            "retention_seconds": retention_seconds,
                                            "max_downloads": max_downloads})
            return partner_info(partner)

    def _check_limits(self, retention_seconds: int, max_downloads: int | None) -> None:
        ceiling = self._app.settings.max_retention_seconds
        if not 1 <= retention_seconds <= ceiling:
            raise UsageError(f"retention must be between 1s and {format_duration(ceiling)} "
                             f"(the max_retention setting), got "
                             f"{format_duration(retention_seconds)}")
        if max_downloads is not None and not 1 <= max_downloads <= MAX_INTEGER:
            raise UsageError(f"max downloads must be between 1 and {MAX_INTEGER}, "
                             f"got {max_downloads}")

    def change(self, actor: Actor, *, slug: str, change: PartnerChange) -> PartnerInfo:
        """Change a partner's name, retention or download limit (for files sent from now).

        Files already waiting keep the expiry and limit they were stored with. The
        partner:change event names each changed field with its old and new value.
        """
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        if change.max_downloads is not None and change.unlimited_downloads:
            raise UsageError("give a download limit or no limit, not both")
        with self._app.transaction() as session:
            partner = get_partner(session, slug, for_update=True)
            old = partner_info(partner)
            retention = change.retention_seconds or partner.retention_seconds
            limit = None if change.unlimited_downloads else (change.max_downloads
                                                             or partner.max_downloads)
            self._check_limits(retention, limit)
            partner.name = (change.name or partner.name).strip()[:200] or slug
            partner.retention_seconds, partner.max_downloads = retention, limit
            new = partner_info(partner)
            details = {f"{field}_{side}": getattr(value, field)
                       for field in ("name", "retention", "retention_seconds", "max_downloads")
                       if getattr(old, field) != getattr(new, field)
                       for side, value in (("old", old), ("new", new))}
            if details:
                self._app.audit.record(session, tag=AuditTag.PARTNER_CHANGE, actor=actor,
                                       subject=f"partner:{slug}", details=details)
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

    def disable(self, actor: Actor, *, slug: str, keep_waiting: bool = False) -> PartnerInfo:
        """Disable a partner: its accounts can no longer sign in and staff cannot upload.

        The files waiting for it are purged at once (each purge audited), unless
        ``keep_waiting``: then they stay until they expire. Its accounts' open SFTP
        sessions end within seconds (the SFTP server re-reads their state).
        """
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        with self._app.transaction() as session:
            partner = get_partner(session, slug, for_update=True)
            if partner.disabled:
                raise ConflictError(f"partner {slug!r} is already disabled")
            partner.disabled = True
            self._app.audit.record(session, tag=AuditTag.PARTNER_DISABLE, actor=actor,
                                   subject=f"partner:{slug}",
                                   details={"waiting_files": WAITING_KEPT if keep_waiting
                                            else WAITING_PURGED})
            purged = [] if keep_waiting else retention.purge_waiting(
                self._app, session, partner_id=partner.id, actor=actor,
                reason=retention.PARTNER_DISABLED)
            info = partner_info(partner)
        retention.delete_purged(self._app, purged)
        return info

    def enable(self, actor: Actor, *, slug: str) -> PartnerInfo:
        """Enable a disabled partner again: its accounts sign in, staff upload to it."""
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        with self._app.transaction() as session:
            partner = get_partner(session, slug, for_update=True)
            if not partner.disabled:
                raise ConflictError(f"partner {slug!r} is already enabled")
            partner.disabled = False
            self._app.audit.record(session, tag=AuditTag.PARTNER_ENABLE, actor=actor,
                                   subject=f"partner:{slug}")
            return partner_info(partner)
