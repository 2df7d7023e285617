"""The staff upload page: choose a partner, see whom the file will be encrypted to, and
send a file the browser encrypts (:mod:`gateway.web_uploads`).

The page shows the partner's approved keys by fingerprint, as ``blindpost send`` does,
and its agreement's data elements. Its script (``/static/portal.js``) reads the file,
declares its columns and records, encrypts it with typage to the keys the page lists and
sends the ciphertext in ordered parts. Without JavaScript the page still shows the keys
and the agreement, and says what to use instead. The endpoints under
``/upload/sessions`` answer in RFC 9457 problem documents, like the API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from admin_ui.rendering import render
from admin_ui.security import CSRF_HEADER, check_csrf, console, signed_in
from gateway import recipient_list
from gateway.console_sessions import SessionInfo
from gateway.data_elements import MAX_NAME, declared_contents
from gateway.errors import GatewayError, UsageError
from gateway.sftp_extensions import MAX_DECLARED, MAX_DECLARED_COLUMNS
from gateway.transfers import MAX_NAME_BYTES
from gateway.web_uploads import PART_LIMIT, WebUpload

router = APIRouter(include_in_schema=False)
Session = Annotated[SessionInfo, Depends(signed_in)]
# Bytes of a part handed to the upload at once: few thread hops, little memory.
WRITE_BATCH = 1 << 20
SESSIONS = "/upload/sessions"


class ContentsIn(BaseModel):
    format: str = Field(max_length=20)
    columns: list[Annotated[str, Field(max_length=MAX_NAME)]] = Field(
        default=[], max_length=MAX_DECLARED_COLUMNS)
    records: int | None = Field(default=None, ge=0)


class UploadIn(BaseModel):
    partner: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=MAX_NAME_BYTES)
    fingerprints: list[Annotated[str, Field(max_length=100)]] = Field(max_length=MAX_DECLARED)
    contents: ContentsIn


class CommitIn(BaseModel):
    parts: int = Field(ge=0)


@router.get("/upload")
def upload_page(request: Request, current: Session, partner: str = "") -> Response:
    gateway = console(request).app
    partners = gateway.transfers.active_partners(current.actor, receiving=True)
    chosen = partner if partner in partners else None
    keys: tuple[recipient_list.PublishedKey, ...] = ()
    terms = None
    if chosen is not None:
        keys = recipient_list.parse(gateway.keys.published(current.actor, chosen)).keys
        terms = gateway.agreements.published(current.actor, chosen)
    return render(request, "upload.html", {
        "partners": partners, "chosen": chosen, "keys": keys, "terms": terms,
        "require_agreement": gateway.settings.require_agreement,
        "max_upload_mib": gateway.settings.max_upload_mib, "part_limit": PART_LIMIT,
        "timestamp": recipient_list.timestamp}, current=current)


@router.post(SESSIONS)
def begin(request: Request, current: Session, body: UploadIn) -> Response:
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    contents = declared_contents(body.contents.format, body.contents.columns,
                                 body.contents.records)
    opened = console(request).app.web_uploads.begin(
        current.actor, session_id=current.id, partner=body.partner, name=body.name,
        fingerprints=body.fingerprints, contents=contents)
    return JSONResponse({"id": opened.id, "part_limit": PART_LIMIT,
                         "name": opened.upload.stored_name}, status_code=201)


def _length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise UsageError("Content-Length must be a number of bytes")
    return int(value)


@router.put(SESSIONS + "/{upload_id}/parts/{number}")
async def part(request: Request, upload_id: str, number: int, current: Session) -> Response:
    await run_in_threadpool(check_csrf, request, current, request.headers.get(CSRF_HEADER))
    service = console(request).app.web_uploads
    found: WebUpload = service.find(upload_id, session_id=current.id)
    await run_in_threadpool(found.begin_part, number, _length(request))
    digest = await _receive(request, found)
    return JSONResponse({"part": number, "received": found.upload.received, "sha256": digest})


async def _receive(request: Request, found: WebUpload) -> str:
    """Stream the part's body into the upload; however it fails, the upload ends."""
    batch = bytearray()
    try:
        async for chunk in request.stream():
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                await run_in_threadpool(found.write, bytes(batch))
                batch.clear()
        if batch:
            await run_in_threadpool(found.write, bytes(batch))
        await run_in_threadpool(found.settle)
    except ClientDisconnect:
        await run_in_threadpool(found.part_failed, "the connection ended during the part")
        raise
    except GatewayError as exc:
        await run_in_threadpool(found.part_failed, exc.diagnostics())
        raise
    except BaseException:
        await run_in_threadpool(found.part_failed, "the part could not be received")
        raise
    return found.end_part(now=console(request).app.clock())


@router.post(SESSIONS + "/{upload_id}/commit")
def commit(request: Request, upload_id: str, current: Session, body: CommitIn) -> Response:
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    done = console(request).app.web_uploads.commit(upload_id, session_id=current.id,
                                                   parts=body.parts)
    entry = done.entry
    return JSONResponse({"partner": entry.partner, "name": entry.name, "size": entry.size,
                         "sha256": entry.sha256, "expires_at": entry.expires_at.isoformat()})


@router.delete(SESSIONS + "/{upload_id}")
def cancel(request: Request, upload_id: str, current: Session) -> Response:
    check_csrf(request, current, request.headers.get(CSRF_HEADER))
    console(request).app.web_uploads.cancel(upload_id, session_id=current.id)
    return Response(status_code=204)
