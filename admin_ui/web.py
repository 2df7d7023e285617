"""The console's ASGI application: pages, the JSON API, static files and error handling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import escape
from starlette.exceptions import HTTPException

from admin_ui import agreement_pages, api, auth_pages, detail_pages, pages, portal, upload_pages
from admin_ui.problems import from_error, problem, status_of
from admin_ui.rendering import FieldError, Form
from admin_ui.security import (
    Console,
    SignInRequiredError,
    StageRequiredError,
    clear_session_cookie,
    protect,
)
from gateway import __version__
from gateway.app import App
from gateway.authz import Permission, permits
from gateway.console_sessions import SessionExpiredError, SessionInfo
from gateway.errors import GatewayError

HERE = Path(__file__).parent
STAGE_PAGES = {"mfa": "/signin/verify", "enrol": "/signin/enrol", "passkey": "/signin/passkey"}


def create_app(gateway: App, *, origin: str | None = None) -> FastAPI:
    """The console over ``gateway``, answering at ``origin`` (default: the settings')."""
    web = FastAPI(title="Blindpost console API", version=__version__,
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None,
                  description="Partners, accounts, recipient keys, files and the audit log "
                              "of a Blindpost gateway. Errors are RFC 9457 problem "
                              "documents. Authenticate with 'Authorization: Bearer <token>' "
                              "(`blindpost token create`).")
    # Autoescaping on for every template: names and labels come from users.
    templates = Jinja2Templates(env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True))
    web.state.console = Console(gateway, origin or gateway.settings.effective_console_origin,
                                templates)
    web.middleware("http")(protect)
    web.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    web.include_router(auth_pages.router)
    web.include_router(pages.router)
    web.include_router(portal.router)
    web.include_router(upload_pages.router)
    web.include_router(detail_pages.router)
    web.include_router(api.router)
    web.include_router(agreement_pages.pages)
    web.include_router(agreement_pages.api)
    _handle_errors(web)
    return web


def _is_api(request: Request) -> bool:
    # The upload page's script reads refusals as problem documents, as API clients do.
    return request.url.path.startswith(("/api/", upload_pages.SESSIONS))


def _handle_errors(web: FastAPI) -> None:
    @web.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        if _is_api(request):
            return from_error(exc, instance=request.url.path)
        status, _ = status_of(exc)
        return form_failed(request, exc, "", status) or error_page(request, status,
                                                                   exc.diagnostics())

    @web.exception_handler(FieldError)
    async def field_error(request: Request, exc: FieldError) -> Response:
        status, _ = status_of(exc.error)
        if _is_api(request):
            return from_error(exc.error, instance=request.url.path)
        return form_failed(request, exc.error, exc.name, status) or error_page(
            request, status, exc.error.diagnostics())

    @web.exception_handler(SignInRequiredError)
    async def sign_in_required(request: Request, _exc: SignInRequiredError) -> Response:
        if _is_api(request):
            return problem(401, "not-signed-in", "sign in first", instance=request.url.path)
        response = RedirectResponse("/signin", status_code=303)
        clear_session_cookie(response, request)
        return response

    @web.exception_handler(StageRequiredError)
    async def stage_required(_request: Request, exc: StageRequiredError) -> Response:
        return RedirectResponse(STAGE_PAGES[exc.stage.value], status_code=303)

    @web.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                           for e in exc.errors())[:500]
        if _is_api(request):
            return problem(422, "invalid-request", detail, instance=request.url.path)
        return error_page(request, 422, f"the form is incomplete or invalid: {detail}")

    @web.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _is_api(request) or exc.status_code == 405:
            slug = "not-found" if exc.status_code == 404 else "http-error"
            return problem(exc.status_code, slug, str(exc.detail), instance=request.url.path)
        return error_page(request, exc.status_code, str(exc.detail))


def form_failed(request: Request, error: GatewayError, name: str,
                status: int) -> Response | None:
    """The page of the form this request submitted, shown again with what was typed and
    the refusal by ``name`` (the whole form: ""); None when no form was named, or when
    the refusal is no fault of the input (signed out, storage down)."""
    form: Form | None = getattr(request.state, "form", None)
    if form is None or not 400 <= status < 500 or isinstance(error, SessionExpiredError):
        return None
    message = error.diagnostics()
    form.errors[name] = message
    request.state.failed_form = form
    response = form.page()
    if form.inline and str(escape(message)).encode() not in response.body:
        # The page did not show the form's message (the form is not offered to this
        # person, or has no place for it): show it at the top instead, never lose it.
        form.inline = False
        response = form.page()
    response.status_code = status
    return response


def error_page(request: Request, status: int, message: str) -> Response:
    """A refusal outside any named form; with the menu when signed in."""
    templates: Jinja2Templates = request.app.state.console.templates
    current = getattr(request.state, "current", None)
    response: HTMLResponse = templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message, "current": current,
                                "csrf": current.csrf if current else "",
                                "can": _can(current)},
        status_code=status)
    return response


def _can(current: SessionInfo | None) -> Callable[[str], bool]:
    actor = current.actor if current else None
    return lambda name: actor is not None and permits(actor, Permission(name))

