"""The code that lets a partner user register their first portal passkey.

The portal's own sign-in is the partner's one-time code, then a passkey. Were the first
passkey registered on the one-time code alone, whoever held the TOTP secret (and not the
SSH key) could enrol a passkey and download. So the first registration also takes a code
the partner read over SFTP (``/.portal-enrolment``), after signing in there with the SSH
key *and* the one-time code: the first passkey rests on both of the partner's factors.
Later passkeys are added from a session signed in with an existing one.

A code is random (80 bits), lives :data:`LIFETIME`, is used once, and belongs to one
account. The database keeps only a MAC of it under the state key, bound to the account,
in a sealed row (:mod:`gateway.integrity`): a read of the database yields no code, a
write yields none that verifies, and a used code's row put back is not current. Reading
the file again replaces the code. Every issue, use and refusal is audited; a wrong code
counts toward the account's lockout like a wrong one-time code. A code is used up by one
conditional delete, so of two concurrent sign-ins with it exactly one enrols; the other
is refused as a used code is, and that counts toward the lockout too (to the sign-in it
is the same code a moment too late).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.auth import SignInRefusedError
from gateway.db.models import Account, PortalEnrolment, Role
from gateway.errors import AuthorizationError
from gateway.integrity import record_rows, row_label, table_of
from gateway.ledger import REMOVED, encode_row
from gateway.portal_code import ALPHABET, GROUP, GROUPS, IssuedCode, normalise

if TYPE_CHECKING:
    from gateway.app import App

LIFETIME = timedelta(minutes=10)
NEEDED = ("your first portal sign-in needs an enrolment code as well: run `blindpost "
          "portal-code` (or read /.portal-enrolment over SFTP) and type it here")
REFUSED = ("enrolment code refused: it is wrong, used or replaced; read a new one with "
           "`blindpost portal-code`")
EXPIRED = "enrolment code expired: read a new one with `blindpost portal-code`"


def _mac_message(account_id: int, code: str) -> bytes:
    return f"blindpost portal enrolment code\n{account_id}\n{code}".encode()


class PortalEnrolmentService:
    """Issue enrolment codes (over SFTP) and take them (at the portal's sign-in)."""

    def __init__(self, app: App) -> None:
        self._app = app

    def issue(self, actor: Actor) -> IssuedCode:
        """A new code for the signed-in partner or staff user ``actor`` (replacing any
        earlier one): both sign in to the console with their one-time code, and their
        first passkey must rest on their SSH key too."""
        if (actor.role not in (Role.PARTNER, Role.STAFF) or actor.account_id is None
                or actor.machine):
            raise AuthorizationError("portal enrolment codes are for partner and staff users")
        code = "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP))
                        for _ in range(GROUPS))
        with self._app.transaction() as session:
            now = self._app.clock()
            row = session.get(PortalEnrolment, actor.account_id) or PortalEnrolment(
                account_id=actor.account_id)
            replaced = row.issued_at is not None
            row.code_hash = self._app.state_keys.mac("row", _mac_message(actor.account_id,
                                                                         code))
            row.issued_at, row.expires_at = now, now + LIFETIME
            session.add(row)
            self._app.audit.record(session, tag=AuditTag.PORTAL_ENROLMENT_ISSUE, actor=actor,
                                   subject=f"account:{actor.name}",
                                   details={"expires_at": row.expires_at.isoformat(),
                                            "replaced": replaced})
            return IssuedCode(actor.name, code, row.expires_at)

    def take(self, session: Session, account: Account, typed: str, actor: Actor,
             now: datetime) -> SignInRefusedError | None:
        """Use up ``account``'s code if ``typed`` is it (in the caller's sign-in
        transaction, after the one-time code proved the holder); else why not, audited.
        A wrong code is a guess (counted toward the lockout); a missing or expired one is
        not."""
        subject = f"account:{account.username}"
        if not typed.strip():
            return self._refused(session, actor, subject, "no code given", NEEDED, guess=False)
        row = session.get(PortalEnrolment, account.id)
        if row is None or not self._app.integrity.holds(session, row):
            return self._refused(session, actor, subject, "no current code", REFUSED, guess=True)
        if not self._app.state_keys.check_mac("row", _mac_message(account.id, normalise(typed)),
                                              row.code_hash):
            return self._refused(session, actor, subject, "wrong code", REFUSED, guess=True)
        if not self._delete(session, row):
            # A concurrent sign-in took the code between our read and our delete: told
            # and counted as a code already used, which is what it is a moment later.
            return self._refused(session, actor, subject, "taken by another sign-in",
                                 REFUSED, guess=True)
        if row.expires_at <= now:
            return self._refused(session, actor, subject, "expired", EXPIRED, guess=False)
        self._app.audit.record(session, tag=AuditTag.PORTAL_ENROLMENT_USE, actor=actor,
                               subject=subject, details={"issued_at": row.issued_at.isoformat()})
        return None

    def _delete(self, session: Session, row: PortalEnrolment) -> bool:
        """Delete the code ``row`` holds; False if it is gone or replaced already.

        One statement decides, so that of two sign-ins that both read the code (on
        PostgreSQL, where reads take no lock) exactly one uses it: the other's delete
        waits for the first to commit, then matches no row. The ORM's delete would only
        warn on that. Core bypasses the flush hooks, so the removal is recorded here, as
        they record it: the log then says a copy of the row put back is not current.
        """
        deleted = session.execute(
            delete(PortalEnrolment)
            .where(PortalEnrolment.account_id == row.account_id,
                   PortalEnrolment.code_hash == row.code_hash)
            .execution_options(synchronize_session=False))
        session.expunge(row)
        if deleted.rowcount != 1:  # type: ignore[attr-defined]  # A CursorResult.
            return False
        record_rows(session, [encode_row(table_of(row), row_label(row), REMOVED)],
                    changed=True)
        return True

    def _refused(self, session: Session, actor: Actor, subject: str, reason: str, tell: str,
                 *, guess: bool) -> SignInRefusedError:
        self._app.audit.record(session, tag=AuditTag.PORTAL_ENROLMENT_FAILURE, actor=actor,
                               subject=subject, details={"reason": reason})
        return SignInRefusedError(f"portal enrolment code: {reason}", tell=tell, guess=guess)
