"""The one table from gateway errors to SFTP status codes, and the audit of refusals.

SFTP version 3 has few status codes, so each refusal also carries the gateway's own
one-line diagnostic, which clients such as OpenSSH's ``sftp`` print to the user.
"""

from __future__ import annotations

from paramiko import sftp

from gateway.actors import Actor
from gateway.app import App
from gateway.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    GatewayError,
    GoneError,
    NotFoundError,
    PolicyError,
    StorageError,
    UsageError,
)
from sftp_server.counters import count_store_error

# paramiko's constants are untyped; these names give them their type.
SFTP_OK: int = sftp.SFTP_OK
SFTP_NO_SUCH_FILE: int = sftp.SFTP_NO_SUCH_FILE
SFTP_PERMISSION_DENIED: int = sftp.SFTP_PERMISSION_DENIED
SFTP_FAILURE: int = sftp.SFTP_FAILURE

# Most specific family first: NotFoundError is a UsageError.
STATUS_BY_FAMILY: tuple[tuple[type[GatewayError], int], ...] = (
    (NotFoundError, SFTP_NO_SUCH_FILE),
    (UsageError, SFTP_FAILURE),
    (PolicyError, SFTP_PERMISSION_DENIED),
    (AuthenticationError, SFTP_PERMISSION_DENIED),
    (ConflictError, SFTP_FAILURE),
    (StorageError, SFTP_FAILURE),
    (DatabaseError, SFTP_FAILURE),
    (ConfigError, SFTP_FAILURE),
)

# Families whose diagnostics describe the server's insides rather than the request.
_INTERNAL = (DatabaseError, ConfigError)
INTERNAL_MESSAGE = "internal server error; the operation was not performed"
UNAVAILABLE_MESSAGE = ("the gateway's database is unavailable; the operation was not "
                       "performed, try again in a moment")


class StatusError(Exception):
    """An SFTP request answered with a status other than OK, and the message to show."""

    def __init__(self, code: int, message: str, *, tell: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Tell the reason on stderr even for a miss: the gateway knows why the file is gone.
        self.tell = tell


def status_for(exc: GatewayError) -> int:
    """The SFTP status code for a gateway error."""
    for family, code in STATUS_BY_FAMILY:
        if isinstance(exc, family):
            return code
    return SFTP_FAILURE


def refusal_for(exc: GatewayError) -> StatusError:
    """The refusal that answers ``exc``, with a message safe to show the client.

    Every failed request passes here, so this is also where store failures are counted.
    """
    if isinstance(exc, StorageError):
        count_store_error()
    if isinstance(exc, DatabaseUnavailableError):
        message = UNAVAILABLE_MESSAGE
    elif isinstance(exc, _INTERNAL):
        message = INTERNAL_MESSAGE
    else:
        message = exc.diagnostics()
    return StatusError(status_for(exc), message, tell=isinstance(exc, GoneError))


def audit_refusal(app: App, actor: Actor, *, operation: str, path: str,
                  error: GatewayError) -> None:
    """Hand a refused SFTP request to the gateway, whose rule decides if it is audited."""
    app.authz.refused(actor, operation=operation, target=path, error=error, via="sftp")
