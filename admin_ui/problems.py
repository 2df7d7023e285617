"""The one table from gateway errors to HTTP statuses, and RFC 9457 problem documents."""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime

from fastapi.responses import JSONResponse

from gateway.audit import VerificationError
from gateway.console_sessions import SessionExpiredError
from gateway.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigError,
    ConflictError,
    DatabaseError,
    GatewayError,
    NotFoundError,
    PolicyError,
    RateLimitedError,
    StorageError,
    UsageError,
)

# First match wins: subclasses come before their bases.
STATUS: tuple[tuple[type[GatewayError], int, str], ...] = (
    (SessionExpiredError, 401, "not-signed-in"),
    (AuthenticationError, 401, "authentication-failed"),
    (AuthorizationError, 403, "forbidden"),
    (RateLimitedError, 429, "too-many-requests"),
    (PolicyError, 403, "refused-by-policy"),
    (NotFoundError, 404, "not-found"),
    (UsageError, 400, "bad-request"),
    (ConflictError, 409, "conflict"),
    (VerificationError, 409, "verification-failed"),
    (StorageError, 503, "storage-unavailable"),
    (DatabaseError, 503, "database-unavailable"),
    (ConfigError, 500, "configuration-error"),
)
PROBLEM_TYPE = "urn:blindpost:problem:"
MEDIA_TYPE = "application/problem+json"


def status_of(error: GatewayError) -> tuple[int, str]:
    """The HTTP status and problem slug for ``error``."""
    for kind, status, slug in STATUS:
        if isinstance(error, kind):
            return status, slug
    return 500, "internal-error"


def problem(status: int, slug: str, detail: str, *, instance: str,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """An RFC 9457 problem document."""
    title = slug.replace("-", " ").capitalize()
    return JSONResponse({"type": PROBLEM_TYPE + slug, "title": title, "status": status,
                         "detail": detail, "instance": instance},
                        status_code=status, media_type=MEDIA_TYPE, headers=headers)


def from_error(error: GatewayError, *, instance: str) -> JSONResponse:
    status, slug = status_of(error)
    return problem(status, slug, error.diagnostics(), instance=instance,
                   headers=headers_for(error))


def headers_for(error: GatewayError) -> dict[str, str] | None:
    """The headers a refusal carries: how to authenticate, or when to ask again."""
    if isinstance(error, RateLimitedError):
        return {"Retry-After": format_datetime(error.retry_at.astimezone(UTC), usegmt=True)}
    if status_of(error)[0] == 401:
        return {"WWW-Authenticate": 'Bearer realm="blindpost"'}
    return None
