"""Who is asking, and the browser protections around it: session cookie, CSRF, origin and
host checks, security headers.

Proving the caller is the adapter's job (:mod:`gateway.console_auth` and
:mod:`gateway.tokens` check the credentials); deciding what the caller may do is not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse

from admin_ui.problems import problem
from gateway.actors import Actor
from gateway.app import App
from gateway.console_sessions import SessionExpiredError, SessionInfo, Stage
from gateway.errors import AuthenticationError, AuthorizationError

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# No inline script or style anywhere: the pages load one stylesheet and, where WebAuthn
# needs it, one script, both from /static.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PERMISSIONS_POLICY = ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
                      "publickey-credentials-create=(self), publickey-credentials-get=(self)")
HSTS = "max-age=63072000; includeSubDomains"


@dataclass(frozen=True)
class Console:
    """What every request handler needs: the gateway, where it is served, the templates."""

    app: App
    origin: str
    templates: Jinja2Templates

    @property
    def secure(self) -> bool:
        return self.origin.startswith("https://")

    @property
    def cookie_name(self) -> str:
        # __Host- binds the cookie to this exact host, path / and HTTPS.
        return "__Host-blindpost" if self.secure else "blindpost"

    @property
    def host(self) -> str:
        return urlsplit(self.origin).netloc


@dataclass(frozen=True)
class Principal:
    """A proven caller: a console session, or an API token (``session`` is None)."""

    actor: Actor
    session: SessionInfo | None


class SignInRequiredError(Exception):
    """A page needs a signed-in session; the browser goes to the sign-in page."""


class StageRequiredError(Exception):
    """The session must finish a sign-in step (enrolment, passkey) first."""

    def __init__(self, stage: Stage) -> None:
        super().__init__(stage.value)
        self.stage = stage


def console(request: Request) -> Console:
    found = request.app.state.console
    assert isinstance(found, Console)
    return found


def source_of(request: Request) -> str:
    """The client's address (uvicorn applies X-Forwarded-For only from trusted proxies)."""
    return request.client.host if request.client else "-"


def session_token(request: Request) -> str:
    return request.cookies.get(console(request).cookie_name, "")


def resume(request: Request) -> SessionInfo:
    """The request's session in whatever stage, or raise :class:`SignInRequiredError`."""
    token = session_token(request)
    if not token:
        raise SignInRequiredError
    try:
        return console(request).app.console_auth.resume(token)
    except SessionExpiredError as exc:
        raise SignInRequiredError from exc


def signed_in(request: Request) -> SessionInfo:
    """The request's complete session (FastAPI dependency of every page)."""
    current = resume(request)
    if not current.complete:
        raise StageRequiredError(current.stage)
    # For the error page's menu (admin_ui/web.py).
    request.state.current = current
    return current


def check_origin(request: Request, actor: Actor) -> None:
    """Refuse (and audit) a state-changing request that a browser says came from another
    site.

    ``Sec-Fetch-Site`` is the browser's own word; ``Origin`` is checked when it names
    one (under ``Referrer-Policy: no-referrer`` Chromium sends ``null`` for forms).
    """
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        error = AuthorizationError(f"request from another site ({site}) refused")
    elif origin not in (None, "null", console(request).origin):
        error = AuthorizationError(f"request from another origin ({origin!r}) refused")
    else:
        return
    console(request).app.authz.refused(actor, operation="cross-site", target=_target(request),
                                       error=error, via="console")
    raise error


def _target(request: Request) -> str:
    return f"{request.method} {request.url.path}"


def check_csrf(request: Request, current: SessionInfo, supplied: str | None) -> None:
    """The origin check and the session's CSRF token (audited when refused)."""
    check_origin(request, current.actor)
    console(request).app.console_auth.check_csrf(current, supplied, target=_target(request))


def api_principal(request: Request) -> Principal:
    """The API caller: ``Authorization: Bearer`` token, or a session with its CSRF header."""
    gateway = console(request).app
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if header:
        if scheme.lower() != "bearer" or not credential.strip():
            raise AuthenticationError("use 'Authorization: Bearer <token>'")
        actor = gateway.tokens.authenticate(credential.strip(), source=source_of(request),
                                            client=_client(request))
        return Principal(actor, None)
    token = session_token(request)
    if not token:
        raise AuthenticationError("sign in, or send an API token as 'Authorization: Bearer'")
    current = gateway.console_auth.resume(token)
    if not current.complete:
        raise AuthenticationError("finish signing in on the console first")
    if request.method in UNSAFE_METHODS:
        check_csrf(request, current, request.headers.get(CSRF_HEADER))
    return Principal(current.actor, current)


def _client(request: Request) -> str:
    return "api:" + request.headers.get("user-agent", "-")[:80]


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    settings = console(request)
    response.set_cookie(settings.cookie_name, token, path="/", secure=settings.secure,
                        httponly=True, samesite="strict")


def clear_session_cookie(response: Response, request: Request) -> None:
    settings = console(request)
    response.delete_cookie(settings.cookie_name, path="/", secure=settings.secure,
                           httponly=True, samesite="strict")


Handler = Callable[[Request], Awaitable[Response]]


async def protect(request: Request, call_next: Handler) -> Response:
    """Middleware: answer only for the console's own host, then add security headers.

    A request naming another host (DNS rebinding, or a link to the raw address) is sent
    to the origin for a read, refused for a change.
    """
    settings = console(request)
    if request.headers.get("host") != settings.host:
        if request.method in ("GET", "HEAD"):
            response: Response = RedirectResponse(settings.origin + request.url.path,
                                                  status_code=308)
        else:
            response = problem(421, "misdirected-request",
                               f"this console answers at {settings.origin}",
                               instance=request.url.path)
    else:
        response = await call_next(request)
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Permissions-Policy"] = PERMISSIONS_POLICY
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.url.path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"
    if settings.secure:
        headers["Strict-Transport-Security"] = HSTS
    return response
