"""Signing in and out: password, then a one-time code or a passkey; first-sign-in
enrolment; passkey registration."""

from __future__ import annotations

from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from admin_ui.rendering import FieldError, keep, read, render
from admin_ui.security import (
    CSRF_HEADER,
    check_csrf,
    check_origin,
    clear_session_cookie,
    console,
    resume,
    session_token,
    set_session_cookie,
    signed_in,
    source_of,
)
from gateway import passwords
from gateway.actors import Actor
from gateway.console_sessions import Opened, SessionExpiredError, SessionInfo, Stage
from gateway.db.models import Role
from gateway.errors import AuthenticationError, UsageError
from gateway.notify.service import NOTIFIED_ROLES, VERIFY_SENDS

router = APIRouter(include_in_schema=False)
NEXT_PAGE = {Stage.SECOND_FACTOR: "/signin/verify", Stage.ENROL: "/signin/enrol",
             Stage.PASSKEY: "/signin/passkey", Stage.FULL: "/"}
Text = Annotated[str, Form(max_length=4096)]
Csrf = Annotated[str, Form(alias="csrf", max_length=200)]


def proceed(request: Request, opened: Opened) -> Response:
    """Set the session cookie and go to the page of the session's next sign-in step."""
    response = RedirectResponse(NEXT_PAGE[opened.session.stage], status_code=303)
    set_session_cookie(response, request, opened.token)
    return response


def _in_stage(request: Request, stage: Stage) -> SessionInfo:
    current = resume(request)
    if current.stage is not stage:
        raise UsageError("this sign-in step is already done; go to the start page")
    return current


@router.get("/signin")
def signin_page(request: Request) -> Response:
    return render(request, "signin.html", {"error": None}, current=None)


@router.post("/signin")
def signin(request: Request, username: Text, password: Text) -> Response:
    check_origin(request, Actor.anonymous(claimed=username, source=source_of(request),
                                          client="console"))
    try:
        opened = console(request).app.console_auth.sign_in(
            username=username.strip(), password=password, source=source_of(request),
            client="console")
    except AuthenticationError as exc:
        return render(request, "signin.html", {"error": exc.diagnostics()}, current=None,
                      status=401)
    return proceed(request, opened)


@router.get("/signin/verify")
def verify_page(request: Request) -> Response:
    current = _in_stage(request, Stage.SECOND_FACTOR)
    return render(request, "verify.html", {"error": None}, current=current)


@router.post("/signin/verify")
def verify(request: Request,
           *, csrf: Csrf = "", code: Text = "", credential: Text = "") -> Response:
    current = _in_stage(request, Stage.SECOND_FACTOR)
    check_csrf(request, current, csrf)
    auth = console(request).app.console_auth
    try:
        if credential:
            opened = auth.passkey_sign_in(session_token(request), credential=credential)
        else:
            opened = auth.second_factor(session_token(request), code=code)
    except SessionExpiredError as exc:
        # The sign-in ended (a final refusal, or too many codes): back to the password.
        response = render(request, "signin.html", {"error": exc.diagnostics()}, current=None,
                          status=401)
        clear_session_cookie(response, request)
        return response
    except AuthenticationError as exc:
        return render(request, "verify.html", {"error": exc.diagnostics()}, current=current,
                      status=401)
    return proceed(request, opened)


@router.post("/signin/verify/options")
def verify_options(request: Request) -> Response:
    current = _in_stage(request, Stage.SECOND_FACTOR)
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    options = console(request).app.console_auth.passkey_options(session_token(request))
    return Response(options, media_type="application/json")


@router.get("/signin/enrol")
def enrol_page(request: Request) -> Response:
    current = _in_stage(request, Stage.ENROL)
    return _enrol_form(request, current, error=None)


def _enrol_form(request: Request, current: SessionInfo, *, error: str | None,
                status: int = 200) -> Response:
    enrolment = console(request).app.console_auth.enrolment(session_token(request))
    qr = (segno.make(enrolment.uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")
          if enrolment.uri else None)
    return render(request, "enrol.html", {"enrolment": enrolment, "qr": qr, "error": error},
                  current=current, status=status)


@router.post("/signin/enrol")
def enrol(request: Request,
          *, csrf: Csrf = "", password: Text, repeat: Text, code: Text) -> Response:
    current = _in_stage(request, Stage.ENROL)
    check_csrf(request, current, csrf)
    if password != repeat:
        return _enrol_form(request, current, error="the two passwords differ", status=400)
    try:
        opened = console(request).app.console_auth.enrol(session_token(request),
                                                         new_password=password, code=code)
    except SessionExpiredError as exc:
        # Too many wrong codes of an enrolled factor: back to the password.
        response = render(request, "signin.html", {"error": exc.diagnostics()}, current=None,
                          status=401)
        clear_session_cookie(response, request)
        return response
    except (AuthenticationError, UsageError) as exc:
        return _enrol_form(request, current, error=exc.diagnostics(), status=400)
    return proceed(request, opened)


@router.get("/signin/passkey")
def passkey_required_page(request: Request) -> Response:
    current = _in_stage(request, Stage.PASSKEY)
    return render(request, "passkey_required.html", {}, current=current)


@router.post("/passkeys/options")
def registration_options(request: Request) -> Response:
    current = resume(request)
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    options = console(request).app.passkeys.registration_options(current.id)
    return Response(options, media_type="application/json")


@router.post("/passkeys")
def register_passkey(request: Request, *, csrf: Csrf = "", credential: Text,
                     name: Annotated[str, Form(max_length=100)] = "passkey") -> Response:
    current = resume(request)
    check_csrf(request, current, csrf)
    console(request).app.passkeys.register(current.id, credential=credential, name=name)
    # A partner user's next step is the portal's Key page (wrapping their identity), a
    # staff member's the upload page.
    after = {Role.PARTNER: "/portal/key", Role.STAFF: "/upload"}.get(current.role, "/me")
    return RedirectResponse(after, status_code=303)


@router.post("/signout")
def signout(request: Request, *, csrf: Csrf = "", everywhere: Text = "") -> Response:
    current = resume(request)
    check_csrf(request, current, csrf)
    console(request).app.console_auth.sign_out(session_token(request),
                                               everywhere=everywhere == "yes")
    response = RedirectResponse("/signin", status_code=303)
    clear_session_cookie(response, request)
    return response


@router.get("/me")
def me_page(request: Request, current: Annotated[SessionInfo, Depends(signed_in)]) -> Response:
    return _me(request, current)


def _me(request: Request, current: SessionInfo, *, changed: str | None = None) -> Response:
    app = console(request).app
    passkeys = app.passkeys.mine(current)
    notify = app.notifications.subscription(current.actor, username=current.username)
    pending = app.notifications.pending_address(current.actor, username=current.username)
    return render(request, "me.html", {"passkeys": passkeys, "notify_email": notify.email,
                                       "notify_pending": pending,
                                       "notify_enabled": app.notifications.enabled,
                                       "notify_allowed": current.role in NOTIFIED_ROLES,
                                       "notify_sends": VERIFY_SENDS,
                                       "changed": changed},
                  current=current)


@router.post("/me/notifications")
def set_notifications(request: Request, *, csrf: Csrf = "", email: Text = "",
                      current: Annotated[SessionInfo, Depends(signed_in)]) -> Response:
    """Opt in (an address, used once the code sent to it is typed) or out (the Turn off
    button) of e-mail notifications."""
    check_csrf(request, current, csrf)
    # A refusal (a bad address, too many codes asked for) is shown by the form.
    keep(request, "/me/notifications", lambda: _me(request, current), email=email)
    service = console(request).app.notifications
    if email.strip():
        service.request_address(current.actor, username=current.username, email=email)
    else:
        service.unsubscribe(current.actor, username=current.username)
    return RedirectResponse("/me#notifications", status_code=303)


@router.post("/me/notifications/confirm")
def confirm_notifications(request: Request, *, csrf: Csrf = "", code: Text = "",
                          current: Annotated[SessionInfo, Depends(signed_in)]) -> Response:
    """The code sent to the new address: from now on notifications go there."""
    check_csrf(request, current, csrf)
    keep(request, "/me/notifications/confirm", lambda: _me(request, current))
    console(request).app.notifications.confirm_address(current.actor,
                                                       username=current.username, code=code)
    return RedirectResponse("/me#notifications", status_code=303)


@router.post("/me/password")
def change_password(request: Request, *, csrf: Csrf = "", current_password: Text = "",
                    new_password: Text = "", repeat: Text = "", code: Text = "",
                    current: Annotated[SessionInfo, Depends(signed_in)]) -> Response:
    """Change one's own password: the current one and a fresh one-time code."""
    check_csrf(request, current, csrf)
    keep(request, "/me/password", lambda: _me(request, current))
    if new_password != repeat:
        raise FieldError("repeat", UsageError("the two new passwords differ"))
    read("new_password", passwords.check_new, new_password, username=current.username,
         current=None)
    console(request).app.console_auth.change_password(
        current, current_password=current_password, new_password=new_password,
        code=code.strip())
    return _me(request, current,
               changed="Your password is changed; your other console sessions ended.")


@router.post("/me/passkeys/{passkey_id}/remove")
def remove_passkey(request: Request, passkey_id: int, *, csrf: Csrf = "",
                   current: Annotated[SessionInfo, Depends(signed_in)]) -> Response:
    check_csrf(request, current, csrf)
    console(request).app.passkeys.remove(current.actor, passkey_id=passkey_id,
                                         own_account=current.account_id)
    return RedirectResponse("/me", status_code=303)

