"""The JSON API under ``/api/v1``: every console operation, for automation.

Callers authenticate with ``Authorization: Bearer <token>`` (``blindpost token create``)
or with a console session and its CSRF token in ``X-CSRF-Token``. Approving or revoking
a recipient key, and approving an authority change, takes a session and a fresh second
factor in the request; the services refuse a token. A change to authority (an admin or
auditor account, their credentials and keys, an admin token) answers 202 with the
pending proposal, which a second admin approves under ``/authority-changes``; a token
asking for one is refused (403). Errors are RFC 9457 problem documents
(:mod:`admin_ui.problems`).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from admin_ui.forms import optional_time
from admin_ui.pages import (
    From,
    Slug,
    To,
    event_filter,
    export_response,
    exposure_report,
    report_download,
)
from admin_ui.security import Principal, api_principal, console
from gateway.accounts import parse_allow_from, parse_role
from gateway.audit import VerificationError
from gateway.authority import AppliedChange, AuthorityChangeInfo
from gateway.db.models import TransferState
from gateway.durations import parse_retention
from gateway.errors import AuthorizationError, NotFoundError
from gateway.partners import PartnerChange
from gateway.sshkeys import parse_public_key
from gateway.transfers import FileFilter
from gateway.values import jsonable

# Declares the bearer scheme in the OpenAPI document; api_principal does the checking.
bearer = HTTPBearer(auto_error=False, description="An API token from `blindpost token create`")
router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])
Caller = Annotated[Principal, Depends(api_principal)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


def _json(value: object, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(value), status_code=status)


def _done_or_pending(value: object, status: int = 200) -> JSONResponse:
    """The result, or 202 with the proposal a second admin must approve first."""
    if isinstance(value, AuthorityChangeInfo):
        return _json({"pending": value}, 202)
    return _json(value, status)


# How long files wait: 90s, 15m, 12h, 7d, 2w (a bare number is days), up to max_retention.
Retention = Annotated[str, Field(min_length=1, max_length=32, examples=["7d", "12h"])]


class PartnerIn(BaseModel):
    slug: Name
    name: str | None = Field(default=None, max_length=200)
    retention: Retention | None = None
    max_downloads: int | None = Field(default=None, ge=1, le=1_000_000)


class PartnerPatch(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    retention: Retention | None = None
    max_downloads: int | None = Field(default=None, ge=1, le=1_000_000)
    unlimited_downloads: bool = False


class AccountIn(BaseModel):
    username: Name
    role: Name
    partner: str | None = Field(default=None, max_length=64)
    ssh_keys: list[Annotated[str, Field(max_length=16384)]] = Field(default=[], max_length=20)
    # As `user add`: the holder enrols at the first SFTP sign-in (no secret in the answer),
    # the networks sign-in is allowed from, and a machine account for a second admin.
    enrol_by_ssh: bool = False
    allow_from: str | None = Field(default=None, max_length=2000)
    machine: bool = False


class SSHKeyIn(BaseModel):
    key: Annotated[str, Field(min_length=1, max_length=16384)]


class KeyIn(BaseModel):
    partner: Name
    recipient: Annotated[str, Field(min_length=1, max_length=16384)]
    label: str = Field(default="", max_length=200)
    # Declares a key of the other type (post-quantum or classical) than the partner's.
    switch_type: bool = False


class SecondFactor(BaseModel):
    """A fresh second factor for one key decision: a one-time code or a passkey assertion
    answering ``…/options`` for the same key and action."""

    code: str | None = Field(default=None, max_length=16)
    credential: dict[str, Any] | None = None


class TokenIn(BaseModel):
    name: Name
    role: Name
    expires_days: int | None = Field(default=None, ge=1, le=366)


@router.get("/me", summary="Who the caller is")
def me(caller: Caller) -> JSONResponse:
    actor = caller.actor
    return _json({"name": actor.name, "kind": actor.kind, "role": actor.role,
                  "via": "session" if caller.session else "token"})


class AddressIn(BaseModel):
    email: Annotated[str, Field(min_length=1, max_length=254)]


class AddressCodeIn(BaseModel):
    code: Annotated[str, Field(min_length=1, max_length=16)]


def _own_account(caller: Principal) -> str:
    # A token is no person with a mailbox: the code goes to whoever signed in.
    if caller.session is None:
        raise AuthorizationError("an account's own notification address is set from its "
                                 "console session, not with a token")
    return caller.session.username


@router.post("/me/notifications", status_code=202,
             summary="Mail a code to an address for your own notifications (at most 3 an "
                     "hour, a minute apart: past that 429 with Retry-After)")
def notification_address(request: Request, caller: Caller, body: AddressIn) -> JSONResponse:
    until = console(request).app.notifications.request_address(
        caller.actor, username=_own_account(caller), email=body.email)
    return _json({"code_expires_at": until}, 202)


@router.post("/me/notifications/confirm",
             summary="Use the address once the code mailed to it is typed back")
def notification_confirm(request: Request, caller: Caller, body: AddressCodeIn) -> JSONResponse:
    return _json(console(request).app.notifications.confirm_address(
        caller.actor, username=_own_account(caller), code=body.code))


@router.get("/dashboard", summary="Files waiting, audit state, insecure settings")
def dashboard(request: Request, caller: Caller) -> JSONResponse:
    overview = console(request).app.dashboard.overview(caller.actor)
    data = jsonable(dataclasses.replace(overview, recent=()))
    assert isinstance(data, dict)
    data["recent"] = [event.as_dict() for event in overview.recent]
    return _json(data)


@router.get("/partners", summary="List partners")
def partners(request: Request, caller: Caller) -> JSONResponse:
    return _json(console(request).app.partners.all(caller.actor))


@router.post("/partners", status_code=201, summary="Create a partner")
def partner_add(request: Request, caller: Caller, body: PartnerIn) -> JSONResponse:
    return _json(console(request).app.partners.add(
        caller.actor, slug=body.slug, name=body.name,
        retention_seconds=parse_retention(body.retention), max_downloads=body.max_downloads), 201)


@router.get("/partners/{slug}", summary="Show a partner")
def partner(request: Request, caller: Caller, slug: str) -> JSONResponse:
    return _json(console(request).app.partners.get(caller.actor, slug))


@router.patch("/partners/{slug}", summary="Change name, retention or download limit")
def partner_change(request: Request, caller: Caller, slug: str,
                   body: PartnerPatch) -> JSONResponse:
    return _json(console(request).app.partners.change(caller.actor, slug=slug, change=(
        PartnerChange(body.name, parse_retention(body.retention), body.max_downloads,
                      body.unlimited_downloads))))


@router.post("/partners/{slug}/disable", summary="Disable a partner")
def partner_disable(request: Request, caller: Caller, slug: str) -> JSONResponse:
    return _json(console(request).app.partners.disable(caller.actor, slug=slug))


@router.post("/partners/{slug}/enable", summary="Enable a disabled partner")
def partner_enable(request: Request, caller: Caller, slug: str) -> JSONResponse:
    return _json(console(request).app.partners.enable(caller.actor, slug=slug))


@router.get("/accounts", summary="List accounts")
def accounts(request: Request, caller: Caller) -> JSONResponse:
    return _json(console(request).app.accounts.all(caller.actor))


@router.post("/accounts", status_code=201,
             summary="Create an account (the response holds its one-time secrets); an admin "
                     "or auditor is proposed (202) for a second admin to approve")
def account_add(request: Request, caller: Caller, body: AccountIn) -> JSONResponse:
    keys = [parse_public_key(key) for key in body.ssh_keys]
    return _done_or_pending(console(request).app.accounts.add(
        caller.actor, username=body.username, role=parse_role(body.role),
        partner=body.partner, ssh_keys=keys, enrol_by_ssh=body.enrol_by_ssh,
        allow_from=parse_allow_from(body.allow_from), machine=body.machine), 201)


@router.get("/accounts/{username}", summary="Show an account")
def account(request: Request, caller: Caller, username: str) -> JSONResponse:
    return _json(console(request).app.accounts.get(caller.actor, username))


@router.post("/accounts/{username}/disable", summary="Disable an account")
def account_disable(request: Request, caller: Caller, username: str) -> JSONResponse:
    return _json(console(request).app.accounts.disable(caller.actor, username=username))


@router.post("/accounts/{username}/enable",
             summary="Enable an account (an admin or auditor: proposed, 202)")
def account_enable(request: Request, caller: Caller, username: str) -> JSONResponse:
    return _done_or_pending(console(request).app.accounts.enable(caller.actor,
                                                                 username=username))


@router.post("/accounts/{username}/unlock",
             summary="Lift a lockout and forget the failed codes (what there was)")
def account_unlock(request: Request, caller: Caller, username: str) -> JSONResponse:
    return _json(console(request).app.auth.unlock(caller.actor, username=username))


@router.post("/accounts/{username}/ssh-keys", status_code=201,
             summary="Add an SSH key (to an admin or auditor: proposed, 202)")
def account_add_key(request: Request, caller: Caller, username: str,
                    body: SSHKeyIn) -> JSONResponse:
    return _done_or_pending(console(request).app.accounts.add_key(
        caller.actor, username=username, key=parse_public_key(body.key)), 201)


@router.post("/accounts/{username}/reset-totp",
             summary="Replace the TOTP secret (of an admin or auditor: proposed, 202)")
def account_reset_totp(request: Request, caller: Caller, username: str) -> JSONResponse:
    enrolment = console(request).app.accounts.reset_totp(caller.actor, username=username)
    if isinstance(enrolment, AuthorityChangeInfo):
        return _done_or_pending(enrolment)
    return _json({"username": username, "totp_uri": enrolment.totp_uri})


@router.get("/authority-changes", summary="Authority changes waiting for a second admin")
def authority_changes(request: Request, caller: Caller) -> JSONResponse:
    return _json(console(request).app.authority.pending(caller.actor))


@router.get("/authority-changes/{change_id}", summary="Show an authority change")
def authority_change(request: Request, caller: Caller, change_id: int) -> JSONResponse:
    return _json(console(request).app.authority.get(caller.actor, change_id))


@router.post("/authority-changes/{change_id}/approve",
             summary="Approve and apply an authority change (a different admin, with a fresh "
                     "second factor); the response holds its one-time secret")
def authority_approve(request: Request, caller: Caller, change_id: int,
                      body: SecondFactor) -> JSONResponse:
    gateway = console(request).app
    if caller.session is None:
        # A token is no person: the service refuses it (and audits the refusal).
        return _applied(gateway.authority.approve(caller.actor, change_id=change_id))
    credential = json.dumps(body.credential) if body.credential else None
    return _applied(gateway.console_auth.approve_change(
        caller.session, change_id=change_id, code=body.code, credential=credential))


def _applied(applied: AppliedChange) -> JSONResponse:
    return _json({"change": applied.change, "one_time_password": applied.one_time_password,
                  "token": applied.token})


@router.post("/authority-changes/{change_id}/approve/options",
             summary="WebAuthn options for a passkey approving this change")
def authority_approve_options(request: Request, caller: Caller, change_id: int) -> Response:
    if caller.session is None:
        raise AuthorizationError("a passkey confirms a person's console session, not a token")
    options = console(request).app.console_auth.change_options(caller.session,
                                                               change_id=change_id)
    return Response(options, media_type="application/json")


@router.post("/authority-changes/{change_id}/withdraw",
             summary="Withdraw a proposed authority change")
def authority_withdraw(request: Request, caller: Caller, change_id: int) -> JSONResponse:
    return _json(console(request).app.authority.withdraw(caller.actor, change_id=change_id))


@router.get("/keys", summary="List recipient keys")
def keys(request: Request, caller: Caller,
         partner: Annotated[str | None, Query(max_length=64)] = None) -> JSONResponse:
    return _json(console(request).app.keys.all(caller.actor, partner=partner))


@router.post("/keys", status_code=201, summary="Propose a recipient key")
def key_propose(request: Request, caller: Caller, body: KeyIn) -> JSONResponse:
    return _json(console(request).app.keys.propose(
        caller.actor, partner=body.partner, recipient=body.recipient, label=body.label,
        switch_type=body.switch_type), 201)


def _decide(request: Request, caller: Caller, key_id: int, verb: str,
            body: SecondFactor) -> JSONResponse:
    gateway = console(request).app
    if caller.session is None:
        # A token is no person: the service refuses it (and audits the refusal).
        action = gateway.keys.approve if verb == "approve" else gateway.keys.revoke
        return _json(action(caller.actor, key_id=key_id))
    credential = json.dumps(body.credential) if body.credential else None
    decide = (gateway.console_auth.approve_key if verb == "approve"
              else gateway.console_auth.revoke_key)
    return _json(decide(caller.session, key_id=key_id, code=body.code, credential=credential))


@router.post("/keys/{key_id}/approve",
             summary="Approve a proposed key (a different admin, with a fresh second factor)")
def key_approve(request: Request, caller: Caller, key_id: int,
                body: SecondFactor) -> JSONResponse:
    return _decide(request, caller, key_id, "approve", body)


@router.post("/keys/{key_id}/revoke", summary="Revoke a key (with a fresh second factor)")
def key_revoke(request: Request, caller: Caller, key_id: int,
               body: SecondFactor) -> JSONResponse:
    return _decide(request, caller, key_id, "revoke", body)


@router.post("/keys/{key_id}/approve/options",
             summary="WebAuthn options for a passkey confirming this approval")
def key_approve_options(request: Request, caller: Caller, key_id: int) -> Response:
    return _options(request, caller, "approve", key_id)


@router.post("/keys/{key_id}/revoke/options",
             summary="WebAuthn options for a passkey confirming this revocation")
def key_revoke_options(request: Request, caller: Caller, key_id: int) -> Response:
    return _options(request, caller, "revoke", key_id)


def _options(request: Request, caller: Caller, verb: str, key_id: int) -> Response:
    if caller.session is None:
        raise AuthorizationError("a passkey confirms a person's console session, not a token")
    options = console(request).app.console_auth.key_options(caller.session, verb=verb,
                                                            key_id=key_id)
    return Response(options, media_type="application/json")


@router.get("/transfers", summary="List files (metadata only) by partner, state and date")
def transfers(request: Request, caller: Caller,
              partner: Annotated[str | None, Query(max_length=64)] = None,
              state: TransferState | None = None,
              since: Annotated[str | None, Query(max_length=40)] = None,
              until: Annotated[str | None, Query(max_length=40)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> JSONResponse:
    selection = FileFilter(partner=partner, state=state,
                           since=optional_time(since, field="since"),
                           until=optional_time(until, field="until"))
    return _json(console(request).app.transfers.files(caller.actor, selection, limit=limit))


@router.post("/transfers/{file_id}/withdraw", summary="Withdraw a file now")
def transfer_withdraw(request: Request, caller: Caller, file_id: str) -> JSONResponse:
    return _json(console(request).app.transfers.withdraw_file(caller.actor, file_id=file_id))


@router.post("/transfers/{file_id}/purge", summary="Purge a file now")
def transfer_purge(request: Request, caller: Caller, file_id: str) -> JSONResponse:
    return _json(console(request).app.transfers.purge_file(caller.actor, file_id=file_id))


@router.get("/audit/events", summary="Audit events, oldest first from index `start`; "
            "or with `newest`, newest first below index `before`; `q` searches actor, "
            "subject and tag")
def audit_events(request: Request, caller: Caller,
                 tag: Annotated[str, Query(max_length=64)] = "",
                 actor: Annotated[str, Query(max_length=200)] = "",
                 since: Annotated[str, Query(max_length=40)] = "",
                 until: Annotated[str, Query(max_length=40)] = "",
                 q: Annotated[str, Query(max_length=200)] = "",
                 partner: Annotated[str, Query(max_length=64)] = "",
                 start: Annotated[int, Query(ge=0, le=2**62)] = 0,
                 newest: bool = False,
                 before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100) -> JSONResponse:
    view = console(request).app.audit_view
    selection = event_filter(tag, actor, since, until, start, q, partner)
    if newest:
        events, next_before = view.newest(caller.actor, selection, before=before, size=limit)
        return _json({"events": [event.as_dict() for event in events],
                      "next_before": next_before})
    events = view.page(caller.actor, selection, size=limit)
    return _json({"events": [event.as_dict() for event in events],
                  "next_start": events[-1].index + 1 if len(events) == limit else None})


@router.get("/audit/events/{index}/proof", summary="tlog-proof that entry INDEX is logged")
def audit_proof(request: Request, caller: Caller, index: int) -> Response:
    if not 0 <= index < 2**62:
        raise NotFoundError(f"there is no audit entry {index}")
    return PlainTextResponse(console(request).app.audit_view.prove(caller.actor, index))


@router.post("/audit/verify", summary="Verify the whole log now")
def audit_verify(request: Request, caller: Caller) -> JSONResponse:
    try:
        report = console(request).app.audit_view.verify(caller.actor)
    except VerificationError as exc:
        return _json({"ok": False, "summary": exc.summary, "problems": exc.problems}, 409)
    return _json({"ok": True, "summary": report.summary(), "size": report.size})


@router.get("/audit/checkpoint", summary="The latest signed checkpoint (a signed note)")
def audit_checkpoint(request: Request, caller: Caller) -> Response:
    signed = console(request).app.audit_view.latest_checkpoint(caller.actor)
    if signed is None:
        raise NotFoundError("the log has no checkpoint yet")
    return PlainTextResponse(signed.note)


@router.get("/audit/export", summary="Every entry as JSON lines")
def audit_export(request: Request, caller: Caller) -> Response:
    return export_response(request, caller.actor)


@router.get("/exposure", summary="Breach-exposure report for a window, from the verified log")
def exposure(request: Request, caller: Caller, start: From, end: To, partner: Slug = "",
             format: Annotated[str, Query(pattern="^(json|csv|txt)$")] = "json",
             unverified: bool = False) -> Response:
    """Every file on the server at any moment from `from` to `to` (ISO 8601 with an
    offset, or a date meaning the whole UTC day), its recipients, downloads and removal.
    A log that fails verification is 409 unless `unverified`."""
    report = exposure_report(request, caller.actor, start=start, end=end, partner=partner,
                             unverified=unverified)
    return report_download(report, format)


@router.get("/tokens", summary="List API tokens (never their secrets)")
def tokens(request: Request, caller: Caller) -> JSONResponse:
    return _json(console(request).app.tokens.all(caller.actor))


@router.post("/tokens", status_code=201,
             summary="Create an API token (shown once); an admin token is proposed (202)")
def token_create(request: Request, caller: Caller, body: TokenIn) -> JSONResponse:
    new = console(request).app.tokens.create(
        caller.actor, name=body.name, role=parse_role(body.role),
        lifetime=timedelta(days=body.expires_days) if body.expires_days else None)
    if isinstance(new, AuthorityChangeInfo):
        return _done_or_pending(new)
    return _json({**jsonable(new.info), "token": new.token}, 201)  # type: ignore[dict-item]


@router.post("/tokens/{name}/revoke", summary="Revoke an API token")
def token_revoke(request: Request, caller: Caller, name: str) -> JSONResponse:
    return _json(console(request).app.tokens.revoke(caller.actor, name=name))
