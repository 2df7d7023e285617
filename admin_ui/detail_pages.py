"""The console's pages about one thing: a partner, an account, an audit entry; and the
approval of a machine account.

Like :mod:`admin_ui.pages`, each handler proves the session (and its CSRF token for a
change) and calls the gateway with the session's actor; the services decide and audit.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from admin_ui.describe import readable
from admin_ui.rendering import render
from admin_ui.security import CSRF_HEADER, check_csrf, console, signed_in
from gateway.authz import Permission
from gateway.console_sessions import SessionInfo
from gateway.details import account_detail, partner_detail
from gateway.errors import NotFoundError

router = APIRouter(include_in_schema=False)
Session = Annotated[SessionInfo, Depends(signed_in)]
Text = Annotated[str, Form(max_length=8192)]
Csrf = Annotated[str, Form(max_length=200)]


@router.get("/partners/{slug}")
def partner_page(request: Request, current: Session, slug: str) -> Response:
    detail = partner_detail(console(request).app, current.actor, slug)
    return render(request, "partner.html", {"d": detail, "p": detail.partner},
                  current=current)


@router.get("/accounts/{username}")
def account_page(request: Request, current: Session, username: str) -> Response:
    detail = account_detail(console(request).app, current.actor, username)
    return render(request, "account.html", {"d": detail, "a": detail.account,
                                            "readable": readable}, current=current)


def _machine_purpose(grant_id: int) -> str:
    return f"machine approve {grant_id}"


@router.post("/accounts/machines/{grant_id}/approve/options")
def machine_step_up_options(request: Request, current: Session, grant_id: int) -> Response:
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    gateway = console(request).app
    # Refuse before asking for a factor when even a fresh one would not do.
    gateway.authz.require(dataclasses.replace(current.actor, standing=False),
                          Permission.MACHINE_APPROVE, subject=f"grant:{grant_id}")
    options = gateway.passkeys.assertion_options(current.id,
                                                 purpose=_machine_purpose(grant_id))
    return Response(options, media_type="application/json")


@router.post("/accounts/machines/{grant_id}/approve")
def machine_approve(request: Request, current: Session, grant_id: int, *, csrf: Csrf = "",
                    code: Text = "", credential: Text = "") -> Response:
    check_csrf(request, current, csrf)
    gateway = console(request).app
    # A fresh second factor given for this very approval, as for a key.
    approver = gateway.console_auth.step_up(current, purpose=_machine_purpose(grant_id),
                                            code=code.strip(), credential=credential or None)
    grant = gateway.machines.approve(approver, grant_id=grant_id)
    return RedirectResponse(f"/accounts/{grant.username}", status_code=303)


@router.get("/audit/{index:int}")
def audit_event(request: Request, current: Session, index: int) -> Response:
    if index > 2**62:
        raise NotFoundError(f"there is no audit entry {index}")
    event = console(request).app.audit_view.event(current.actor, index)
    return render(request, "audit_event.html", {
        "e": event, "details": readable(event.details),
        "in_log": f"/audit?{urlencode({'before': index + 1})}#e-{index}"}, current=current)
