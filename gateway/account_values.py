"""What the account services hand out: frozen values, never ORM rows or secrets.

Split from :mod:`gateway.accounts`, so that the service module stays about the lifecycle
of accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway import networks, throttle
from gateway.db.models import Account, Role, SSHKey


@dataclass(frozen=True)
class SSHKeyInfo:
    """An account's SSH public key."""

    key_type: str
    fingerprint: str
    comment: str
    created_at: datetime
    shared: bool = False


@dataclass(frozen=True)
class AccountInfo:
    """An account as the services hand it out: no secrets, no password hash.

    ``enrolment`` is ``enrolled``, ``pending`` (the holder enrols at their first SFTP
    sign-in, until ``enrol_until``), ``expired`` (that window closed first) or ``none``
    (a machine account, or one awaiting approval). ``locked_until`` is set while a
    lockout is in force; ``failures`` counts the failed codes that still count toward one.
    """

    id: int
    username: str
    role: Role
    partner: str | None
    partner_id: int | None
    disabled: bool
    created_at: datetime
    ssh_keys: tuple[SSHKeyInfo, ...]
    totp_enrolled: bool
    machine: bool = False
    allow_from: tuple[str, ...] | None = None
    enrolment: str = "enrolled"
    enrol_until: datetime | None = None
    locked_until: datetime | None = None
    failures: int = 0

    @property
    def state(self) -> str:
        """Disabled, locked (until when) or active, in the words every listing uses."""
        if self.disabled:
            return "disabled"
        if self.locked_until is not None:
            return f"locked until {_when(self.locked_until)}"
        return "active"

    @property
    def second_factor(self) -> str:
        """The second factor, or the enrolment still due, in the words every listing uses."""
        if self.machine:
            return "none (machine: key alone)"
        return {"enrolled": "totp",
                "pending": f"enrol by SSH until {_when(self.enrol_until)}",
                "expired": f"enrolment expired {_when(self.enrol_until)}",
                "none": "none"}[self.enrolment]


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


@dataclass(frozen=True)
class NewAccount:
    """A freshly created account and the secrets shown to its owner exactly once.

    ``totp_uri`` is None when the holder enrols over SSH (or for a machine account);
    ``machine_grant`` is the id of a machine account's proposal awaiting approval.
    """

    account: AccountInfo
    totp_uri: str | None
    one_time_password: str | None
    machine_grant: int | None = None


@dataclass(frozen=True)
class Enrolment:
    """A new second factor: its URI to show now, or the window for the holder to enrol."""

    username: str
    totp_uri: str | None
    enrol_until: datetime | None


def key_info(row: SSHKey) -> SSHKeyInfo:
    return SSHKeyInfo(row.key_type, row.fingerprint, row.comment, row.created_at, row.shared)


def enrolment_state(row: Account, now: datetime) -> str:
    if row.totp is None:
        return "none"
    if row.totp.enrol_until is None:
        return "enrolled"
    return "pending" if row.totp.enrol_until > now else "expired"


def account_info(row: Account, *, now: datetime,
                 lock: throttle.Block | None = None) -> AccountInfo:
    """The value of an account loaded by :func:`get_account` (keys and TOTP loaded)."""
    allowed = networks.stored(row.allow_from)
    state = enrolment_state(row, now)
    return AccountInfo(row.id, row.username, row.role,
                       row.partner.slug if row.partner else None, row.partner_id, row.disabled,
                       row.created_at, tuple(key_info(k) for k in row.ssh_keys),
                       state == "enrolled", row.machine,
                       None if allowed is None else tuple(str(n) for n in allowed), state,
                       row.totp.enrol_until if row.totp else None,
                       lock.blocked_until if lock else None, lock.failures if lock else 0)
