"""The console's pages: server-rendered HTML that works without JavaScript.

Each handler proves the session (and its CSRF token for a change), calls one gateway
service with the session's actor and renders or redirects. The services decide and audit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse

from admin_ui.describe import readable
from admin_ui.forms import optional_int, optional_time
from admin_ui.rendering import keep, read, render
from admin_ui.security import CSRF_HEADER, check_csrf, console, signed_in
from gateway.accounts import SFTP_ROLES, check_username, parse_allow_from, parse_role
from gateway.actors import Actor
from gateway.audit import AuditTag, VerificationError
from gateway.audit_service import EventFilter
from gateway.authority import AuthorityChangeInfo
from gateway.consequences import Consequence
from gateway.console_sessions import SessionInfo
from gateway.db.models import Role, TransferState
from gateway.durations import parse_retention
from gateway.errors import NotFoundError, UsageError
from gateway.exposure import ExposureReport, parse_moment, render_csv, render_json, render_text
from gateway.partners import PartnerChange, check_slug
from gateway.sshkeys import parse_public_key
from gateway.tokens import TOKEN_ROLES
from gateway.transfers import FileFilter

router = APIRouter(include_in_schema=False)
Session = Annotated[SessionInfo, Depends(signed_in)]
Text = Annotated[str, Form(max_length=8192)]
Csrf = Annotated[str, Form(max_length=200)]
PAGE_SIZE = 50


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@router.get("/")
def dashboard(request: Request, current: Session) -> Response:
    if current.role is Role.PARTNER:
        return RedirectResponse("/portal", status_code=303)
    if current.role is Role.STAFF:
        return RedirectResponse("/upload", status_code=303)
    overview = console(request).app.dashboard.overview(current.actor)
    return render(request, "dashboard.html", {"o": overview}, current=current)


# Partners ----------------------------------------------------------------------------

@router.get("/partners")
def partners(request: Request, current: Session) -> Response:
    rows = console(request).app.partners.all(current.actor)
    return render(request, "partners.html", {"partners": rows}, current=current)


@router.post("/partners")
def partner_add(request: Request, current: Session, *, csrf: Csrf = "", slug: Text = "",
                name: Text = "", retention: Text = "", max_downloads: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, "/partners", lambda: partners(request, current), slug=slug, name=name,
         retention=retention, max_downloads=max_downloads)
    console(request).app.partners.add(
        current.actor, slug=read("slug", check_slug, slug.strip()), name=name.strip() or None,
        retention_seconds=read("retention", parse_retention, retention),
        max_downloads=read("max_downloads", optional_int, max_downloads,
                           field="download limit"))
    return _back("/partners")


@router.post("/partners/{slug}")
def partner_change(request: Request, current: Session, slug: str,
                   *, csrf: Csrf = "", name: Text = "",
                   retention: Text = "", max_downloads: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/partners/{slug}", lambda: partners(request, current), name=name,
         retention=retention, max_downloads=max_downloads)
    limit = read("max_downloads", optional_int, max_downloads, field="download limit")
    console(request).app.partners.change(current.actor, slug=slug, change=PartnerChange(
        name=name.strip() or None,
        retention_seconds=read("retention", parse_retention, retention),
        max_downloads=limit, unlimited_downloads=limit is None))
    return _back("/partners")


def _confirm(request: Request, current: SessionInfo, consequence: Consequence, *,
             action: str, back: str, button: str, code: bool = False,
             options: str | None = None) -> Response:
    """The step before a destructive action: what it does, and the button that does it.

    No JavaScript: the form posts to ``action`` (with a one-time code field when the
    action takes a fresh second factor; ``options`` is its passkey challenge).
    """
    return render(request, "confirm.html", {
        "consequence": consequence, "action": action, "back": back, "button": button,
        "code": code, "options": options}, current=current)


@router.get("/partners/{slug}/disable")
def partner_disable_confirm(request: Request, current: Session, slug: str,
                            keep_waiting: bool = False) -> Response:
    told = console(request).app.consequences.partner_disable(current.actor, slug=slug,
                                                             keep_waiting=keep_waiting)
    return _confirm(request, current, told, action=f"/partners/{slug}/disable",
                    back="/partners", button=f"Disable {slug}")


@router.post("/partners/{slug}/disable")
def partner_disable(request: Request, current: Session, slug: str, *, csrf: Csrf = "",
                    keep_waiting: Text = "") -> Response:
    check_csrf(request, current, csrf)
    console(request).app.partners.disable(current.actor, slug=slug,
                                          keep_waiting=keep_waiting == "yes")
    return _back("/partners")


@router.post("/partners/{slug}/enable")
def partner_enable(request: Request, current: Session, slug: str, *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, "/partners", lambda: partners(request, current), inline=False)
    console(request).app.partners.enable(current.actor, slug=slug)
    return _back("/partners")


# Accounts ----------------------------------------------------------------------------

@router.get("/accounts")
def accounts(request: Request, current: Session, q: Annotated[str, Query(max_length=100)] = ""
             ) -> Response:
    gateway = console(request).app
    words = q.casefold().split()
    shown = [a for a in gateway.accounts.all(current.actor)
             if all(word in f"{a.username} {a.role.value} {a.partner or ''} {a.state}".casefold()
                    for word in words)]
    return render(request, "accounts.html", {
        "accounts": shown, "q": q, "grants": gateway.machines.pending(current.actor),
        "changes": gateway.authority.pending(current.actor),
        "partners": gateway.partners.all(current.actor), "roles": list(Role)}, current=current)


def _done_or_pending(result: object, done: Callable[[], Response]) -> Response:
    """A proposal waits on the accounts page for a second admin; anything else is done."""
    if isinstance(result, AuthorityChangeInfo):
        return _back(f"/accounts#change-{result.id}")
    return done()


def _secret_page(request: Request, current: SessionInfo, *, title: str, username: str,
                 password: str | None = None, totp_uri: str | None = None,
                 token: str | None = None) -> Response:
    qr = segno.make(totp_uri, error="m").svg_inline(scale=4) if totp_uri else None
    return render(request, "secret.html", {
        "title": title, "username": username, "password": password, "totp_uri": totp_uri,
        "qr": qr, "token": token}, current=current)


@router.post("/accounts")
def account_add(request: Request, current: Session, *, csrf: Csrf = "", username: Text = "",
                role: Text = "", partner: Text = "", ssh_key: Text = "", allow_from: Text = "",
                machine: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, "/accounts", lambda: accounts(request, current), username=username,
         role=role, partner=partner, ssh_key=ssh_key, allow_from=allow_from, machine=machine)
    keys = [read("ssh_key", parse_public_key, line) for line in ssh_key.splitlines()
            if line.strip()]
    parsed_role, is_machine = read("role", parse_role, role.strip()), bool(machine)
    # The onboarding runbook's rule: nobody at the registry sees an SFTP user's TOTP
    # secret. The console enrols staff and partners by SSH (the holder enrols at the
    # first sign-in with their own key) and never shows their secret.
    by_ssh = parsed_role in SFTP_ROLES and not is_machine
    if by_ssh and not keys:
        raise UsageError("a staff or partner account enrols its one-time code at its first "
                         "SFTP sign-in with its own key: give its SSH public key")
    new = console(request).app.accounts.add(
        current.actor, username=read("username", check_username, username.strip()),
        role=parsed_role, partner=partner.strip() or None, ssh_keys=keys, enrol_by_ssh=by_ssh,
        allow_from=read("allow_from", parse_allow_from, allow_from.strip() or None),
        machine=is_machine)
    if isinstance(new, AuthorityChangeInfo):
        return _back(f"/accounts#change-{new.id}")
    if new.machine_grant is not None:
        return _back(f"/accounts#grant-{new.machine_grant}")
    if new.totp_uri is None and new.one_time_password is None:
        return _back(f"/accounts/{new.account.username}")
    return _secret_page(request, current, title=f"Account {new.account.username} created",
                        username=new.account.username, password=new.one_time_password,
                        totp_uri=new.totp_uri)


@router.get("/accounts/{username}/disable")
def account_disable_confirm(request: Request, current: Session, username: str) -> Response:
    told = console(request).app.consequences.account_disable(current.actor, username=username)
    return _confirm(request, current, told, action=f"/accounts/{username}/disable",
                    back="/accounts", button=f"Disable {username}")


@router.post("/accounts/{username}/disable")
def account_disable(request: Request, current: Session, username: str,
                    *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/{username}/disable", lambda: accounts(request, current), inline=False)
    console(request).app.accounts.disable(current.actor, username=username)
    return _back("/accounts")


@router.post("/accounts/{username}/enable")
def account_enable(request: Request, current: Session, username: str,
                   *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/{username}/enable", lambda: accounts(request, current), inline=False)
    result = console(request).app.accounts.enable(current.actor, username=username)
    return _done_or_pending(result, lambda: _back("/accounts"))


@router.post("/accounts/{username}/unlock")
def account_unlock(request: Request, current: Session, username: str,
                   *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/{username}/unlock", lambda: accounts(request, current), inline=False)
    console(request).app.auth.unlock(current.actor, username=username)
    return _back("/accounts")


@router.post("/accounts/{username}/ssh-keys")
def account_add_key(request: Request, current: Session, username: str, *, csrf: Csrf = "",
                    ssh_key: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/{username}/ssh-keys", lambda: accounts(request, current),
         ssh_key=ssh_key)
    key = read("ssh_key", parse_public_key, ssh_key.strip())
    result = console(request).app.accounts.add_key(current.actor, username=username, key=key)
    return _done_or_pending(result, lambda: _back("/accounts"))


@router.post("/accounts/{username}/reset-totp")
def account_reset_totp(request: Request, current: Session, username: str,
                       *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/{username}/reset-totp", lambda: accounts(request, current),
         inline=False)
    gateway = console(request).app
    # As at creation: an SFTP user re-enrols by SSH; the console never shows their secret.
    by_ssh = gateway.accounts.get(current.actor, username).role in SFTP_ROLES
    enrolment = gateway.accounts.reset_totp(current.actor, username=username,
                                            enrol_by_ssh=by_ssh)
    if isinstance(enrolment, AuthorityChangeInfo):
        return _back(f"/accounts#change-{enrolment.id}")
    if enrolment.totp_uri is None:
        return _back(f"/accounts/{username}")
    return _secret_page(request, current, title=f"New TOTP secret for {username}",
                        username=username, totp_uri=enrolment.totp_uri)


@router.post("/accounts/{username}/reset-password")
def account_reset_password(request: Request, current: Session, username: str,
                           *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/{username}/reset-password", lambda: accounts(request, current),
         inline=False)
    change = console(request).app.accounts.reset_password(current.actor, username=username)
    return _back(f"/accounts#change-{change.id}")


@router.post("/accounts/changes/{change_id}/approve/options")
def change_step_up_options(request: Request, current: Session, change_id: int) -> Response:
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    options = console(request).app.console_auth.change_options(current, change_id=change_id)
    return Response(options, media_type="application/json")


@router.post("/accounts/changes/{change_id}/approve")
def change_approve(request: Request, current: Session, change_id: int, *, csrf: Csrf = "",
                   code: Text = "", credential: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/changes/{change_id}/approve", lambda: accounts(request, current))
    applied = console(request).app.console_auth.approve_change(
        current, change_id=change_id, code=code.strip(), credential=credential or None)
    change = applied.change
    if applied.one_time_password is None and applied.token is None:
        return _back("/accounts")
    # Shown once, to this approver: the proposer never sees the new credential.
    return _secret_page(request, current, title=f"Approved: {change.summary}",
                        username=change.target, password=applied.one_time_password,
                        token=applied.token)


@router.post("/accounts/changes/{change_id}/withdraw")
def change_withdraw(request: Request, current: Session, change_id: int,
                    *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/accounts/changes/{change_id}/withdraw", lambda: accounts(request, current),
         inline=False)
    console(request).app.authority.withdraw(current.actor, change_id=change_id)
    return _back("/accounts")


# Recipient keys ----------------------------------------------------------------------

@router.get("/keys")
def keys(request: Request, current: Session) -> Response:
    gateway = console(request).app
    return render(request, "keys.html", {"keys": gateway.keys.all(current.actor),
                                         "partners": gateway.partners.all(current.actor)},
                  current=current)


@router.post("/keys")
def key_propose(request: Request, current: Session,
                *, csrf: Csrf = "", partner: Text = "", recipient: Text = "",
                label: Text = "", switch_type: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, "/keys", lambda: keys(request, current), partner=partner,
         recipient=recipient, label=label)
    key = console(request).app.keys.propose(
        current.actor, partner=partner.strip(), recipient=recipient.strip(),
        label=label.strip()[:200], switch_type=bool(switch_type))
    return _back(f"/keys#key-{key.id}")


@router.post("/keys/{key_id}/{verb}/options")
def key_step_up_options(request: Request, current: Session, key_id: int, verb: str) -> Response:
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    options = console(request).app.console_auth.key_options(current, verb=verb, key_id=key_id)
    return Response(options, media_type="application/json")


@router.post("/keys/{key_id}/approve")
def key_approve(request: Request, current: Session, key_id: int,
                *, csrf: Csrf = "", code: Text = "",
                credential: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/keys/{key_id}/approve", lambda: keys(request, current))
    console(request).app.console_auth.approve_key(current, key_id=key_id, code=code.strip(),
                                                  credential=credential or None)
    return _back("/keys")


@router.get("/keys/{key_id}/revoke")
def key_revoke_confirm(request: Request, current: Session, key_id: int) -> Response:
    return _key_revoke_page(request, current, key_id)


def _key_revoke_page(request: Request, current: SessionInfo, key_id: int) -> Response:
    told = console(request).app.consequences.key_revoke(current.actor, key_id=key_id)
    return _confirm(request, current, told, action=f"/keys/{key_id}/revoke", back="/keys",
                    button=f"Revoke key {key_id}", code=True,
                    options=f"/keys/{key_id}/revoke/options")


@router.post("/keys/{key_id}/revoke")
def key_revoke(request: Request, current: Session, key_id: int, *, csrf: Csrf = "", code: Text = "",
               credential: Text = "") -> Response:
    check_csrf(request, current, csrf)
    # A wrong code shows the confirmation again, its consequence and the message.
    keep(request, f"/keys/{key_id}/revoke", lambda: _key_revoke_page(request, current, key_id))
    console(request).app.console_auth.revoke_key(current, key_id=key_id, code=code.strip(),
                                                 credential=credential or None)
    return _back("/keys")


# Transfers ---------------------------------------------------------------------------

def _state(value: str | None) -> TransferState | None:
    if not value:
        return None
    try:
        return TransferState(value)
    except ValueError:
        raise UsageError(f"unknown state {value[:20]!r}; accepted: "
                         + ", ".join(s.value for s in TransferState)) from None


@router.get("/transfers")
def transfers(request: Request, current: Session, partner: str = "", state: str = "",
              since: str = "", until: str = "") -> Response:
    gateway = console(request).app
    selection = FileFilter(partner=partner or None, state=_state(state),
                           since=optional_time(since, field="from"),
                           until=optional_time(until, field="until"))
    return render(request, "transfers.html", {
        "files": gateway.transfers.files(current.actor, selection),
        "partners": gateway.partners.all(current.actor), "states": list(TransferState),
        "f": {"partner": partner, "state": state, "since": since, "until": until}},
        current=current)


@router.post("/transfers/{file_id}/withdraw")
def transfer_withdraw(request: Request, current: Session, file_id: str,
                      *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/transfers/{file_id}/withdraw", lambda: transfers(request, current),
         inline=False)
    console(request).app.transfers.withdraw_file(current.actor, file_id=file_id)
    return _back("/transfers")


@router.get("/transfers/{file_id}/purge")
def transfer_purge_confirm(request: Request, current: Session, file_id: str) -> Response:
    told = console(request).app.consequences.file_purge(current.actor, file_id=file_id)
    return _confirm(request, current, told, action=f"/transfers/{file_id}/purge",
                    back="/transfers", button="Purge now")


@router.post("/transfers/{file_id}/purge")
def transfer_purge(request: Request, current: Session, file_id: str,
                   *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/transfers/{file_id}/purge", lambda: transfers(request, current), inline=False)
    console(request).app.transfers.purge_file(current.actor, file_id=file_id)
    return _back("/transfers")


# Audit log ---------------------------------------------------------------------------

def event_filter(tag: str, actor: str, since: str, until: str, start: int,
                 search: str = "", partner: str = "") -> EventFilter:
    """The audit filter from query values (shared with the API).

    A plain date in ``until`` includes that whole day: "from Tuesday until Tuesday" is
    Tuesday.
    """
    if tag and tag not in {t.value for t in AuditTag}:
        raise UsageError(f"unknown tag {tag[:40]!r}")
    end = optional_time(until, field="until")
    if end is not None and len(until.strip()) == len("2026-11-01"):
        end += timedelta(days=1)
    return EventFilter(tag=AuditTag(tag) if tag else None, actor=actor.strip() or None,
                       since=optional_time(since, field="from"), until=end,
                       start=max(0, start), search=search.strip()[:200] or None,
                       partner=partner.strip() or None)


Search = Annotated[str, Query(max_length=200)]
Cursor = Annotated[int | None, Query(ge=1, le=2**62)]


@router.get("/audit")
def audit(request: Request, current: Session, tag: Search = "", actor: Search = "",
          since: Search = "", until: Search = "", q: Search = "", order: Search = "",
          partner: Search = "", start: Annotated[int, Query(ge=0, le=2**62)] = 0,
          before: Cursor = None) -> Response:
    return _audit_page(request, current, form={
        "tag": tag, "actor": actor, "since": since, "until": until, "q": q,
        "partner": partner, "order": "oldest" if order == "oldest" else ""},
        start=start, before=before)


def _audit_page(request: Request, current: SessionInfo, *, form: dict[str, str] | None = None,
                start: int = 0, before: int | None = None,
                verification: str | None = None, failed: bool = False) -> Response:
    """The log, newest first unless the form asks for the oldest first; pages by keyset
    (``before`` an index, or ``start`` from one when oldest first)."""
    f = form or {"tag": "", "actor": "", "since": "", "until": "", "q": "", "partner": "",
                 "order": ""}
    gateway = console(request).app
    view = gateway.audit_view
    selection = event_filter(f["tag"], f["actor"], f["since"], f["until"],
                             start if f["order"] else 0, f["q"], f["partner"])
    if f["order"]:
        events = view.page(current.actor, selection, size=PAGE_SIZE)
        more = {"start": events[-1].index + 1} if len(events) == PAGE_SIZE else None
    else:
        events, next_before = view.newest(current.actor, selection, before=before,
                                          size=PAGE_SIZE)
        more = {"before": next_before} if next_before is not None else None
    kept = {k: v for k, v in f.items() if v}
    return render(request, "audit.html", {
        "events": events, "tags": [t.value for t in AuditTag], "readable": readable,
        "partners": [p.slug for p in gateway.partners.all(current.actor)],
        "checkpoint": view.latest_checkpoint(current.actor), "f": f,
        "next_page": f"/audit?{urlencode({**kept, **more})}" if more else None,
        "first_page": f"/audit?{urlencode(kept)}" if (before or start) else None,
        "verification": verification, "failed": failed}, current=current,
        status=409 if failed else 200)


@router.post("/audit/verify")
def audit_verify(request: Request, current: Session, *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    try:
        report = console(request).app.audit_view.verify(current.actor)
    except VerificationError as exc:
        return _audit_page(request, current, verification=exc.diagnostics(), failed=True)
    return _audit_page(request, current, verification=report.summary())


@router.get("/audit/checkpoint")
def audit_checkpoint(request: Request, current: Session) -> Response:
    signed = console(request).app.audit_view.latest_checkpoint(current.actor)
    if signed is None:
        raise NotFoundError("the log has no checkpoint yet")
    return PlainTextResponse(signed.note, headers={
        "Content-Disposition": 'attachment; filename="checkpoint.txt"'})


@router.get("/audit/{index:int}/proof")
def audit_proof(request: Request, current: Session, index: int) -> Response:
    if index < 0:
        raise NotFoundError(f"there is no audit entry {index}")
    proof = console(request).app.audit_view.prove(current.actor, index)
    return PlainTextResponse(proof, headers={
        "Content-Disposition": f'attachment; filename="entry-{index}.tlog-proof"'})


def export_response(request: Request, actor: Actor) -> StreamingResponse:
    """Every entry as one JSON line (the export's format), streamed from one snapshot.

    The first entry is read before the response starts, so a refusal is an error
    response rather than a broken download.
    """
    events = console(request).app.audit_view.events(actor)
    first = next(events, None)

    def lines() -> Iterator[bytes]:
        if first is not None:
            yield first.leaf + b"\n"
        for event in events:
            yield event.leaf + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
        "Content-Disposition": 'attachment; filename="audit-export.jsonl"'})


@router.get("/audit/export")
def audit_export(request: Request, current: Session) -> Response:
    return export_response(request, current.actor)


# Exposure report ---------------------------------------------------------------------

# The page shows the start of the text; the downloads carry the whole report.
SHOWN_LINES = 2000
DOWNLOADS: dict[str, tuple[str, Callable[[ExposureReport], Iterator[str]]]] = {
    "txt": ("text/plain; charset=utf-8", render_text),
    "json": ("application/json", render_json),
    "csv": ("text/csv; charset=utf-8", render_csv)}
From = Annotated[str, Query(alias="from", max_length=40)]
To = Annotated[str, Query(alias="to", max_length=40)]
Slug = Annotated[str, Query(max_length=64)]


def exposure_report(request: Request, actor: Actor, *, start: str, end: str, partner: str,
                    unverified: bool) -> ExposureReport:
    """The report for query values (shared with the API); a date means the whole UTC day."""
    return console(request).app.exposure.report(
        actor, start=parse_moment(start, option="from"),
        end=parse_moment(end, option="to", end_of_day=True),
        partner=partner.strip() or None, unverified=unverified)


def report_download(report: ExposureReport, kind: str) -> StreamingResponse:
    """The report as a file: text for people, JSON and CSV for tooling."""
    media_type, renderer = DOWNLOADS[kind]
    name = f"exposure-{report.window_start:%Y%m%dT%H%M}-{report.window_end:%Y%m%dT%H%M}.{kind}"
    return StreamingResponse(renderer(report), media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/exposure")
def exposure(request: Request, current: Session, start: From = "", end: To = "",
             partner: Slug = "", unverified: bool = False) -> Response:
    app = console(request).app
    form = {"from": start, "to": end, "partner": partner, "unverified": unverified}
    context: dict[str, object] = {"f": form, "partners": app.partners.all(current.actor)}
    if not start and not end:
        return render(request, "exposure.html", context, current=current)
    try:
        report = exposure_report(request, current.actor, start=start, end=end,
                                 partner=partner, unverified=unverified)
    except VerificationError as exc:
        context["failure"] = exc.diagnostics()
        return render(request, "exposure.html", context, current=current, status=409)
    text, cut = _first_lines(render_text(report), SHOWN_LINES)
    query = urlencode({"from": start, "to": end, "partner": partner,
                       **({"unverified": "true"} if unverified else {})})
    context.update(report=report, text=text, cut=cut, query=query)
    return render(request, "exposure.html", context, current=current)


def _first_lines(chunks: Iterator[str], limit: int) -> tuple[str, int]:
    """The first ``limit`` lines of a text given in chunks, and how many lines follow.

    A whole year's report is tens of megabytes: only the lines shown are kept.
    """
    shown: list[str] = []
    rest = 0
    for chunk in chunks:
        lines = chunk.splitlines()
        room = limit - len(shown)
        shown.extend(lines[:room])
        rest += max(0, len(lines) - room)
    return "\n".join(shown), rest


@router.get("/exposure/report.{kind}")
def exposure_download(request: Request, current: Session, kind: str, start: From = "",
                      end: To = "", partner: Slug = "", unverified: bool = False) -> Response:
    if kind not in DOWNLOADS:
        raise NotFoundError(f"no report format {kind[:10]!r}: txt, json or csv")
    report = exposure_report(request, current.actor, start=start, end=end, partner=partner,
                             unverified=unverified)
    return report_download(report, kind)


# API tokens --------------------------------------------------------------------------

@router.get("/tokens")
def tokens(request: Request, current: Session) -> Response:
    rows = console(request).app.tokens.all(current.actor)
    return render(request, "tokens.html", {"tokens": rows, "roles": TOKEN_ROLES},
                  current=current)


@router.post("/tokens")
def token_create(request: Request, current: Session, *, csrf: Csrf = "", name: Text = "",
                 role: Text = "", expires_days: Text = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, "/tokens", lambda: tokens(request, current), name=name, role=role,
         expires_days=expires_days)
    days = read("expires_days", optional_int, expires_days, field="expires after (days)")
    new = console(request).app.tokens.create(
        current.actor, name=name.strip(), role=read("role", parse_role, role.strip()),
        lifetime=timedelta(days=days) if days else None)
    if isinstance(new, AuthorityChangeInfo):
        return _back(f"/accounts#change-{new.id}")
    return _secret_page(request, current, title=f"API token {new.info.name} created",
                        username=new.info.name, token=new.token)


@router.post("/tokens/{name}/revoke")
def token_revoke(request: Request, current: Session, name: str, *, csrf: Csrf = "") -> Response:
    check_csrf(request, current, csrf)
    keep(request, f"/tokens/{name}/revoke", lambda: tokens(request, current), inline=False)
    console(request).app.tokens.revoke(current.actor, name=name)
    return _back("/tokens")
