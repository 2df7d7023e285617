"""The partner portal: partner users sign in with their one-time code and a passkey, see
their partner's waiting files, download the ciphertext and decrypt it in their browser.

The server sends only ciphertext, counted and audited by the same
:class:`gateway.transfers.Download` as an SFTP read; the identity that opens it reaches
the server only wrapped by the partner's passkey (:mod:`gateway.portal`). Without
JavaScript the pages still list the files and serve their ciphertext.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from admin_ui.auth_pages import proceed
from admin_ui.rendering import render
from admin_ui.security import (
    check_csrf,
    check_origin,
    console,
    signed_in,
    source_of,
)
from gateway.actors import Actor
from gateway.console_sessions import SessionInfo
from gateway.db.models import Role
from gateway.errors import AuthenticationError, AuthorizationError, UsageError
from gateway.transfers import Download

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=4096)]
Csrf = Annotated[str, Form(alias="csrf", max_length=200)]
Wrapped = Annotated[str, Form(max_length=64 * 1024)]
# One read of the store per chunk sent: large enough that the per-read cost is small
# against the network, small enough that a slow client holds little memory.
CHUNK = 1024 * 1024
RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def partner(current: Annotated[SessionInfo, Depends(signed_in)]) -> SessionInfo:
    """The signed-in partner user (FastAPI dependency of every portal page)."""
    if current.role is not Role.PARTNER:
        raise AuthorizationError("the portal is for partner accounts; staff and admins "
                                 "use the console")
    return current


Partner = Annotated[SessionInfo, Depends(partner)]


@router.get("/portal/signin")
def signin_page(request: Request) -> Response:
    return render(request, "portal_signin.html", {"error": None}, current=None)


@router.post("/portal/signin")
def signin(request: Request, username: Text, code: Text, enrolment: Text = "") -> Response:
    check_origin(request, Actor.anonymous(claimed=username, source=source_of(request),
                                          client="portal"))
    try:
        opened = console(request).app.console_auth.code_sign_in(
            username=username.strip(), code=code, source=source_of(request), client="portal",
            enrolment=enrolment)
    except AuthenticationError as exc:
        return render(request, "portal_signin.html", {"error": exc.diagnostics()},
                      current=None, status=401)
    # The console's sign-in steps follow (a passkey always: never Stage.FULL here).
    return proceed(request, opened)


@router.get("/portal")
def files_page(request: Request, current: Partner) -> Response:
    gateway = console(request).app
    files = gateway.transfers.inbox(current.actor)
    identity = gateway.portal.mine(current.actor)
    return render(request, "portal.html", {"files": files, "identity": identity,
                                           "quote": quote}, current=current)


@router.get("/portal/key")
def key_page(request: Request, current: Partner) -> Response:
    identity = console(request).app.portal.mine(current.actor)
    return render(request, "portal_key.html", {"identity": identity}, current=current)


@router.post("/portal/key")
def store_key(request: Request, current: Partner, *, csrf: Csrf = "", credential: Text,
              wrapped: Wrapped, recipient: Wrapped) -> Response:
    check_csrf(request, current, csrf)
    stored = console(request).app.portal.store(current.actor, credential=credential,
                                               wrapped=wrapped, recipient=recipient)
    return JSONResponse({"fingerprint": stored.fingerprint, "recipient": stored.recipient})


@router.get("/portal/key/wrapped")
def wrapped_key(request: Request, current: Partner) -> Response:
    stored = console(request).app.portal.require_mine(current.actor)
    return JSONResponse({"credential": stored.credential, "wrapped": stored.wrapped})


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``[start, end)`` a ``Range`` header asks for, None for all of
    it; :class:`UsageError` for one this server does not serve (several ranges, or one
    outside the file)."""
    if header is None:
        return None
    match = RANGE.fullmatch(header.strip())
    if match is None:
        raise UsageError("only one byte range 'bytes=START-' or 'bytes=START-END' is served")
    start = int(match.group(1))
    end = min(int(match.group(2)) + 1, size) if match.group(2) else size
    if start >= size or end <= start:
        raise UsageError(f"the range starts past the end of the file ({size} bytes)")
    return start, end


def _send(download: Download, start: int, end: int) -> Iterator[bytes]:
    """Read ``[start, end)`` in chunks; closing records what was served, however the
    response ends (finished, or the browser went away)."""
    try:
        offset = start
        while offset < end:
            data = download.read_at(offset, min(CHUNK, end - offset))
            if not data:
                break
            offset += len(data)
            yield data
    finally:
        download.close()


@router.get("/portal/files/{name}")
def download_file(request: Request, name: str, current: Partner) -> Response:
    transfers = console(request).app.transfers
    entry = transfers.stat(current.actor, name)
    wanted = requested_range(request.headers.get("range"), entry.size)
    download = transfers.open_download(current.actor, name)
    start, end = wanted or (0, download.size)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start),
               "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"}
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{download.size}"
    body = _send(download, start, end)
    # Started here, so that however the response ends (even before its first byte is
    # sent) closing the generator closes the download and gives back its reservation.
    first = next(body, b"")
    return StreamingResponse(itertools.chain([first], body),
                             status_code=206 if wanted else 200,
                             media_type="application/octet-stream", headers=headers)
