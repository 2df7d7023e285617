"""The one error hierarchy of the gateway.

Every failure a caller should handle is a :class:`GatewayError`. Adapters translate the
families below into their protocol's statuses in one table each (SFTP status codes in
``sftp_server``, HTTP statuses in ``admin_ui``, exit codes in the CLI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    # Set once the refusal this error describes is in the audit log, so that an adapter
    # passing it on does not record it a second time.
    audited = False

    def diagnostics(self) -> str:
        """Return a one-line, human-readable explanation, safe to show to the caller."""
        return str(self) or type(self).__name__


class ConfigError(GatewayError):
    """The configuration file or environment holds an invalid value."""


class UsageError(GatewayError):
    """The request is malformed: an unknown name, a bad argument, an invalid key."""


class NotFoundError(UsageError):
    """The named object (partner, account, key, file) does not exist."""


class GoneError(NotFoundError):
    """A file the caller could have had is no longer there; the message says why
    (expired, download limit reached, withdrawn, purged), so adapters tell it even where
    a plain miss says only "no such file"."""


class ConflictError(GatewayError):
    """The object already exists or is in a state that forbids the operation."""


class AuthenticationError(GatewayError):
    """Credentials were missing, wrong, replayed, or the account is locked or disabled."""


class PolicyError(GatewayError):
    """The caller is authenticated but the rules forbid the operation."""


class AuthorizationError(PolicyError):
    """The acting account, operator or component does not hold the permission."""


class RateLimitedError(PolicyError):
    """The caller asked for something too often; it may ask again at ``retry_at``."""

    def __init__(self, message: str, *, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class StorageError(GatewayError):
    """The object store failed: full disk, missing object, I/O error."""


class DatabaseError(GatewayError):
    """The database is unreachable or its schema is not at the expected revision."""


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached or stayed locked past the busy timeout; the request
    changed nothing and may succeed when retried."""


class StartupError(GatewayError):
    """A service cannot start here: its address is in use or not available on this host."""


class RemoteError(GatewayError):
    """The gateway could not be reached, or the SSH or SFTP session with it failed."""
