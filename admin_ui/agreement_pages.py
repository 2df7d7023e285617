"""The console page and API endpoints of a partner's data-sharing agreement (issue 24).

One admin proposes terms here (they grant nothing); a second admin approves the
proposal like every authority change, on the accounts page or under
``/api/v1/authority-changes``, with a fresh second factor. Kept apart from the other
pages: it is one small page and two endpoints.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from admin_ui.api import bearer
from admin_ui.forms import optional_int
from admin_ui.pages import Session
from admin_ui.rendering import render
from admin_ui.security import Principal, api_principal, check_csrf, console
from gateway.agreement_terms import parse_aliases
from gateway.values import jsonable

pages = APIRouter(include_in_schema=False)
# The bearer scheme is declared as on the rest of the API (admin_ui.api).
api = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])
Caller = Annotated[Principal, Depends(api_principal)]
Text = Annotated[str, Form(max_length=8192)]
Csrf = Annotated[str, Form(max_length=200)]
Column = Annotated[str, Field(min_length=1, max_length=64)]


class AgreementIn(BaseModel):
    columns: list[Column] = Field(min_length=1, max_length=1024)
    aliases: dict[Column, Column] = Field(default={}, max_length=1024)
    max_records: int | None = Field(default=None, ge=0)
    allow_opaque: bool = False


@pages.get("/partners/{slug}/agreement")
def agreement_page(request: Request, current: Session, slug: str) -> Response:
    gateway = console(request).app
    return render(request, "agreement.html", {
        "slug": slug, "agreement": gateway.agreements.show(current.actor, slug),
        "required": gateway.settings.require_agreement}, current=current)


@pages.post("/partners/{slug}/agreement")
def agreement_propose(request: Request, current: Session, slug: str, *, csrf: Csrf = "",
                      columns: Text, aliases: Text = "", max_records: Text = "",
                      allow_opaque: Text = "") -> Response:
    check_csrf(request, current, csrf)
    change = console(request).app.agreements.propose(
        current.actor, partner=slug, columns=[c for c in columns.split(",") if c.strip()],
        aliases=parse_aliases(a for a in aliases.split(",") if a.strip()),
        max_records=optional_int(max_records, field="maximum records"),
        allow_opaque=allow_opaque == "on")
    return RedirectResponse(f"/accounts#change-{change.id}", status_code=303)


@api.get("/partners/{slug}/agreement", summary="A partner's data-sharing agreement in force")
def agreement_show(request: Request, caller: Caller, slug: str) -> JSONResponse:
    info = console(request).app.agreements.show(caller.actor, slug)
    return JSONResponse(jsonable({"partner": slug, "agreement": info}))


@api.post("/partners/{slug}/agreement", status_code=202,
          summary="Propose a partner's data-sharing agreement (202: a second admin approves "
                  "it under /authority-changes)")
def agreement_propose_api(request: Request, caller: Caller, slug: str,
                          body: AgreementIn) -> JSONResponse:
    change = console(request).app.agreements.propose(
        caller.actor, partner=slug, columns=body.columns, aliases=body.aliases,
        max_records=body.max_records, allow_opaque=body.allow_opaque)
    return JSONResponse(jsonable({"pending": change}), status_code=202)
