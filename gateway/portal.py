"""The partner portal's own state: each partner user's age identity, wrapped by a passkey.

The browser wraps the identity (typage's WebAuthn PRF recipient) before anything leaves
it; this service keeps only that ciphertext and refuses whatever is not ciphertext to a
passkey, so an identity in the clear can never be stored by mistake or by a broken or
hostile script. Downloads go through :meth:`gateway.transfers.TransferService.open_download`,
the same reservation, served-bytes accounting and audit as SFTP.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from gateway import envelope
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import PortalIdentity, Role
from gateway.errors import AuthorizationError, NotFoundError, UsageError

if TYPE_CHECKING:
    from gateway.app import App

# typage's encoding of a PRF credential: Bech32, upper case, credential id and RP id.
CREDENTIAL = re.compile(r"AGE-PLUGIN-FIDO2PRF-1[0-9A-Z]{10,1900}")
PASSKEY_STANZA = "age-encryption.org/fido2prf"
MAX_WRAPPED = 64 * 1024
# A secret key's marker, in any case (Bech32 is case-insensitive): never stored.
SECRET_MARKER = re.compile(r"AGE-SECRET-KEY|AGE-PLUGIN-[A-Z0-9]+-1", re.IGNORECASE)


@dataclass(frozen=True)
class WrappedIdentity:
    """What the portal keeps for one partner user: all of it safe to hand back to them."""

    username: str
    credential: str
    wrapped: str
    recipient: str
    fingerprint: str
    stored_at: datetime


def check_wrapped(wrapped: str) -> str:
    """``wrapped`` if it is an armored age file to exactly one passkey and nothing else."""
    if len(wrapped) > MAX_WRAPPED:
        raise UsageError(f"the wrapped identity is over {MAX_WRAPPED} bytes")
    body = wrapped.replace("-----BEGIN AGE ENCRYPTED FILE-----", "").replace(
        "-----END AGE ENCRYPTED FILE-----", "")
    if SECRET_MARKER.search(body):
        raise UsageError("that is an identity in the clear; only a passkey-wrapped one "
                         "is stored")
    try:
        header = envelope.inspect(io.BytesIO(wrapped.encode("ascii")), armored=True)
    except (envelope.EnvelopeError, UnicodeEncodeError) as exc:
        raise UsageError(f"the wrapped identity is not an armored age file: {exc}") from exc
    if header.stanza_types != (PASSKEY_STANZA,):
        raise UsageError("the wrapped identity must be encrypted to one passkey only "
                         f"(found {', '.join(header.stanza_types) or 'no stanza'})")
    return wrapped


class PortalService:
    """Store and hand back partner users' passkey-wrapped identities."""

    def __init__(self, app: App) -> None:
        self._app = app

    def _require_partner(self, actor: Actor) -> int:
        self._app.authz.require(actor, Permission.FILE_DOWNLOAD)
        if actor.role is not Role.PARTNER or actor.account_id is None:
            raise AuthorizationError("the portal is for partner accounts")
        return actor.account_id

    def store(self, actor: Actor, *, credential: str, wrapped: str,
              recipient: str) -> WrappedIdentity:
        """Keep (or replace) the caller's wrapped identity, audited by its fingerprint."""
        account_id = self._require_partner(actor)
        if not CREDENTIAL.fullmatch(credential):
            raise UsageError("the passkey handle is not an AGE-PLUGIN-FIDO2PRF-1 string")
        check_wrapped(wrapped)
        parsed = envelope.parse_recipient(recipient.strip())
        with self._app.transaction() as session:
            row = session.get(PortalIdentity, account_id) or PortalIdentity(
                account_id=account_id)
            replaced = row.stored_at is not None
            row.credential, row.wrapped = credential, wrapped
            row.recipient, row.fingerprint = str(parsed), parsed.fingerprint
            row.stored_at = self._app.clock()
            session.add(row)
            self._app.audit.record(session, tag=AuditTag.PORTAL_IDENTITY_STORE, actor=actor,
                                   subject=f"account:{actor.name}",
                                   details={"fingerprint": parsed.fingerprint,
                                            "kind": parsed.kind, "replaced": replaced})
            return _value(actor.name, row)

    def mine(self, actor: Actor) -> WrappedIdentity | None:
        """The caller's wrapped identity, if they enrolled one."""
        account_id = self._require_partner(actor)
        with self._app.read() as session:
            row = session.scalar(select(PortalIdentity).where(
                PortalIdentity.account_id == account_id))
            return None if row is None else _value(actor.name, row)

    def require_mine(self, actor: Actor) -> WrappedIdentity:
        found = self.mine(actor)
        if found is None:
            raise NotFoundError("no wrapped identity is stored for you; enrol on the Key page")
        return found


def _value(username: str, row: PortalIdentity) -> WrappedIdentity:
    return WrappedIdentity(username, row.credential, row.wrapped, row.recipient,
                           row.fingerprint, row.stored_at)
