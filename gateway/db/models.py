"""The core tables: partners, accounts and their credentials, partner keys, transfers.

Audit tables live with the audit log in :mod:`gateway.audit.models`.
"""

# No `from __future__ import annotations` here: SQLAlchemy would then evaluate every
# column's annotation from its string, about a tenth of what declaring the models costs
# each command at start-up (bench/startup.py); only forward references are quoted.

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.db.base import Base, UTCDateTime

# The largest value an Integer column holds on PostgreSQL (SQLite's are wider): no id or
# count beyond it can exist, so a request for one is answered before it reaches a driver.
MAX_INTEGER = 2**31 - 1


class Role(enum.StrEnum):
    """What an account may do. Partner accounts belong to exactly one partner."""

    ADMIN = "admin"
    AUDITOR = "auditor"
    STAFF = "staff"
    PARTNER = "partner"


class KeyState(enum.StrEnum):
    """Life of a partner recipient key: only approved keys receive new files."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    REVOKED = "revoked"


class TransferState(enum.StrEnum):
    """A stored file is available until it is withdrawn, superseded or purged."""

    AVAILABLE = "available"
    WITHDRAWN = "withdrawn"
    SUPERSEDED = "superseded"
    PURGED = "purged"


def _enum(kind: type[enum.StrEnum], name: str) -> Enum:
    # Stored as plain strings with a CHECK constraint, the same on SQLite and PostgreSQL.
    return Enum(kind, name=name, native_enum=False, create_constraint=True,
                values_callable=lambda members: [m.value for m in members], length=16)


class Partner(Base):
    __tablename__ = "partners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # How long a file waits, fixed into each file's expires_at when it is uploaded.
    retention_seconds: Mapped[int] = mapped_column(Integer)
    max_downloads: Mapped[int | None] = mapped_column(Integer)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    keys: Mapped[list["PartnerKey"]] = relationship(back_populates="partner",
                                                  order_by="PartnerKey.id")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("(role = 'partner') = (partner_id IS NOT NULL)",
                        name="partner_link_matches_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A machine (staff) account signs in with its key alone, only from ``allow_from``;
    # set only once a second admin approved it (MachineGrant).
    machine: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The source networks sign-in is allowed from (CIDRs, comma-separated); NULL: any.
    allow_from: Mapped[str | None] = mapped_column(Text)
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    partner: Mapped[Partner | None] = relationship(lazy="joined")
    ssh_keys: Mapped[list["SSHKey"]] = relationship(back_populates="account",
                                                  order_by="SSHKey.id")
    totp: Mapped["TOTPSecret | None"] = relationship(back_populates="account")


class SSHKey(Base):
    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("account_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_type: Mapped[str] = mapped_column(String(64))
    # Base64 of the SSH wire-format public key blob, as in authorized_keys.
    key_data: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Added with --allow-shared-key: the same key is (or may be) on other accounts too.
    shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    account: Mapped[Account] = relationship(back_populates="ssh_keys")


class TOTPSecret(Base):
    __tablename__ = "totp_secrets"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    # The base32 secret, encrypted with a key derived from keys/state_key and bound to
    # the account (gateway.state_keys): a read of the database yields no second factor.
    secret: Mapped[str] = mapped_column(Text)
    # The last accepted time step: a code for this step or an earlier one is a replay.
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set for a secret the account holder enrols at their first SFTP sign-in (shown to
    # them after their key verified) until then; NULL once enrolled or shown by an admin.
    enrol_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    account: Mapped[Account] = relationship(back_populates="totp")


class AuthThrottle(Base):
    """Failure counts per account and per source address, shared by every worker and node."""

    __tablename__ = "auth_throttle"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    last_failure: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PartnerKey(Base):
    __tablename__ = "partner_keys"
    __table_args__ = (UniqueConstraint("partner_id", "recipient"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    recipient: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(80))
    label: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[KeyState] = mapped_column(_enum(KeyState, "key_state"))
    proposed_by: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    partner: Mapped[Partner] = relationship(back_populates="keys", lazy="joined")
    proposer: Mapped[Account] = relationship(foreign_keys=[proposed_by], lazy="joined")
    approver: Mapped[Account | None] = relationship(foreign_keys=[approved_by], lazy="joined")
    revoker: Mapped[Account | None] = relationship(foreign_keys=[revoked_by], lazy="joined")


class GrantState(enum.StrEnum):
    """Life of a machine account's proposed networks: approved ones are applied."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    SUPERSEDED = "superseded"


class MachineGrant(Base):
    """A machine account's networks, proposed by one admin and approved by another.

    Approval makes the account a machine account (key alone, from these networks only)
    or widens its networks; narrowing needs no approval.
    """

    __tablename__ = "machine_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    allow_from: Mapped[str] = mapped_column(Text)
    state: Mapped[GrantState] = mapped_column(_enum(GrantState, "grant_state"))
    proposed_by: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    account: Mapped[Account] = relationship(foreign_keys=[account_id], lazy="joined",
                                            innerjoin=True)
    proposer: Mapped[Account] = relationship(foreign_keys=[proposed_by], lazy="joined",
                                             innerjoin=True)
    approver: Mapped[Account | None] = relationship(foreign_keys=[approved_by], lazy="joined")


class ChangeState(enum.StrEnum):
    """Life of a proposed authority change: only an approved one was applied."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    WITHDRAWN = "withdrawn"
    SUPERSEDED = "superseded"


class AuthorityChange(Base):
    """A change that creates or extends authority, proposed by one admin and applied only
    when a different admin approves it with a fresh proof (:mod:`gateway.authority`).

    ``target`` names the account (or, for a token, the token) the change is about; it
    may not exist yet. ``params`` is the change's parameters as RFC 8785 JSON.
    """

    __tablename__ = "authority_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200), index=True)
    params: Mapped[str] = mapped_column(Text)
    state: Mapped[ChangeState] = mapped_column(_enum(ChangeState, "change_state"))
    proposed_by: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who withdrew it: an admin, the local operator or a token, by name (grants nothing).
    withdrawn_by: Mapped[str | None] = mapped_column(String(200))
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    proposer: Mapped[Account] = relationship(foreign_keys=[proposed_by], lazy="joined",
                                             innerjoin=True)
    approver: Mapped[Account | None] = relationship(foreign_keys=[approved_by], lazy="joined")


class Transfer(Base):
    # One available file per name in an inbox (older ones are superseded on upload): the
    # partial unique index AVAILABLE_NAME_INDEX, added by declare_partial_indexes().
    __tablename__ = "transfers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    # The name the partner sees, always ending in ".age".
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64), unique=True)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    max_downloads: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[TransferState] = mapped_column(_enum(TransferState, "transfer_state"))
    # What the file holds, never a value (gateway.data_elements): its format, its data
    # elements as RFC 8785 JSON, its record count, and who read them ("gateway", or
    # "sender" for a pre-encrypted file whose sender declared them). NULL: not recorded.
    data_format: Mapped[str | None] = mapped_column(String(16))
    data_elements: Mapped[str | None] = mapped_column(Text)
    record_count: Mapped[int | None] = mapped_column(BigInteger)
    elements_source: Mapped[str | None] = mapped_column(String(16))
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    partner: Mapped[Partner] = relationship(lazy="joined", innerjoin=True)
    uploader: Mapped[Account] = relationship(lazy="joined", innerjoin=True)


class Agreement(Base):
    """A partner's data-sharing agreement, in force since a second admin approved it
    (an authority change of kind ``agreement-set``, :mod:`gateway.agreements`).

    ``columns`` (the data elements, normalised) and ``aliases`` are RFC 8785 JSON.
    """

    __tablename__ = "agreements"

    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    columns: Mapped[str] = mapped_column(Text)
    aliases: Mapped[str] = mapped_column(Text)
    max_records: Mapped[int | None] = mapped_column(BigInteger)
    allow_opaque: Mapped[bool] = mapped_column(Boolean, default=False)
    change_id: Mapped[int] = mapped_column(ForeignKey("authority_changes.id"))
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # An HMAC over the granting fields, made with keys/state_key (gateway.integrity).
    seal: Mapped[str | None] = mapped_column(String(100))

    partner: Mapped[Partner] = relationship(lazy="joined", innerjoin=True)


class ServedRange(Base):
    """Bytes ``[start_byte, end_byte)`` of a stored file served to an account by one open.

    A download limit counts what was served, not how many times the file was opened
    (:mod:`gateway.served`); every worker and node records here, so they agree.
    """

    __tablename__ = "served_ranges"
    __table_args__ = (
        CheckConstraint("start_byte >= 0 AND end_byte > start_byte", name="range"),
        Index("ix_served_ranges_transfer_account", "transfer_id", "account_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    start_byte: Mapped[int] = mapped_column(BigInteger)
    end_byte: Mapped[int] = mapped_column(BigInteger)
    served_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PendingObject(Base):
    """A store object that may exist without an available transfer referencing it.

    Recorded before an upload writes its first byte (``purpose`` "upload", touched as it
    goes) and in the same transaction that ends a transfer (``purpose`` "delete"). The
    purger deletes what such rows name once they are stale, so crash leftovers are found
    without listing the whole store.
    """

    __tablename__ = "pending_objects"

    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    touched_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class SettingValue(Base):
    """The last value of each setting that the audit log has seen (for setting:change)."""

    __tablename__ = "setting_values"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ConsoleCredential(Base):
    """An admin's or auditor's console enrolment: set once the one-time password from
    ``init`` or ``user add`` was replaced and TOTP enrolled. No row: enrolment is due."""

    __tablename__ = "console_credentials"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seal: Mapped[str | None] = mapped_column(String(100))


class ConsoleSession(Base):
    """A console sign-in, kept server-side; the browser holds only a random token.

    ``id`` is the SHA-256 of that token, so reading this table yields no usable cookie.
    ``stage`` says how far the sign-in got (second factor, enrolment, passkey, full).
    A WebAuthn challenge and the TOTP secret being enrolled live here while pending.
    """

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(200))
    client: Mapped[str] = mapped_column(String(200), default="")
    challenge: Mapped[str | None] = mapped_column(String(200))
    challenge_purpose: Mapped[str | None] = mapped_column(String(64))
    challenge_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enrol_secret: Mapped[str | None] = mapped_column(Text)
    # Second factors refused in this sign-in: it ends after gateway.auth.MAX_CODE_ATTEMPTS,
    # and its wrong codes count toward the account's lockout once (``counted``).
    factor_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    seal: Mapped[str | None] = mapped_column(String(100))


class Passkey(Base):
    """A WebAuthn credential registered by a console account."""

    __tablename__ = "passkeys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    # base64url, as the browser names the credential.
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[str] = mapped_column(Text)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seal: Mapped[str | None] = mapped_column(String(100))


class ApiToken(Base):
    """An API token for automation: stored as a SHA-256 of the secret, never the secret."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "token_role"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seal: Mapped[str | None] = mapped_column(String(100))


class PortalIdentity(Base):
    """A partner user's age identity, wrapped by their passkey (WebAuthn PRF) in their
    browser, so that another browser with the synced passkey can unwrap it.

    Only ciphertext: an age file whose one stanza is a passkey's. Not sealed, because it
    grants nothing: a replaced row unwraps to an identity no stored file was encrypted
    to, and the recipient beside it is a note for the partner, never a key files go to.
    """

    __tablename__ = "portal_identities"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    # typage's AGE-PLUGIN-FIDO2PRF-1… string: the credential id and relying party, no secret.
    credential: Mapped[str] = mapped_column(String(2000))
    wrapped: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(100))
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)


AVAILABLE_NAME_INDEX = "uq_transfers_available_name"


def declare_partial_indexes(_target: object = None, *_args: object, **_kwargs: object) -> None:
    """Add the partial unique indexes to the models' metadata (once; idempotent).

    They are declared apart from their tables because SQLAlchemy checks a
    ``sqlite_where`` or ``postgresql_where`` argument by importing that dialect's whole
    package, about 20 ms of every command's start for the one not in use, while queries
    never read an index. The migrations create them in the database
    (``0001_core``); what turns the models into DDL gets them here: the migration
    environment calls this, and ``Base.metadata.create_all`` runs it first (below).
    """
    table: Table = Transfer.__table__  # type: ignore[assignment]  # Declarative tables are Tables.
    if any(index.name == AVAILABLE_NAME_INDEX for index in table.indexes):
        return
    Index(AVAILABLE_NAME_INDEX, table.c.partner_id, table.c.name, unique=True,
          sqlite_where=text("state = 'available'"),
          postgresql_where=text("state = 'available'"))


event.listen(Base.metadata, "before_create", declare_partial_indexes)
class PortalEnrolment(Base):
    """A one-time code that lets a partner user register their first portal passkey.

    Issued over SFTP (after the SSH key and the one-time code), so the first passkey rests
    on both of the partner's factors; short-lived, used once, and kept only as a MAC under
    the state key bound to the account, so reading the database yields no code and writing
    it yields none that verifies. Sealed (gateway.integrity): a used code's row put back is
    not current and enrols nothing.
    """

    __tablename__ = "portal_enrolments"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seal: Mapped[str | None] = mapped_column(String(100))
