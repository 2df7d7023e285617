"""SFTP request handling: the inbox view (what each request means) and the wire server.

:class:`InboxView` answers paramiko's ``SFTPServerInterface`` calls by resolving the path
with :func:`sftp_server.vfs.resolve` and calling :class:`gateway.transfers.TransferService`.
Failures are gateway errors; :class:`BlindpostSFTPServer` turns each into one status
(through :mod:`sftp_server.errors`) with a readable message, audits refusals, advertises
and answers ``limits@openssh.com`` and Blindpost's own extension (see
:mod:`gateway.sftp_extensions`), and aborts uploads a lost connection leaves open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat as stat_module
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from paramiko import Channel, Message, SFTPAttributes, SFTPHandle, SFTPServerInterface
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_NAMES,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_WRITE,
    SFTP_BAD_MESSAGE,
    SFTP_EOF,
    SFTP_FAILURE,
    SFTP_OP_UNSUPPORTED,
    SFTPError,
)

from gateway.actors import Actor
from gateway.agreement_terms import render as render_terms
from gateway.app import App
from gateway.data_elements import declared_contents
from gateway.db.models import Role
from gateway.errors import (
    ConflictError,
    DatabaseError,
    GatewayError,
    NotFoundError,
    PolicyError,
    UsageError,
)
from gateway.portal_code import render, rendered_size
from gateway.sftp_extensions import (
    CIPHERTEXT_SHA256,
    DECLARE_CONTENTS,
    DECLARE_RECIPIENTS,
    MAX_DECLARED,
    MAX_DECLARED_COLUMNS,
    TRANSFER_ID,
)
from gateway.transfers import AGE_SUFFIX, FileEntry
from sftp_server.auth import LoginGate
from sftp_server.budget import MemoryBudget
from sftp_server.errors import (
    INTERNAL_MESSAGE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    StatusError,
    audit_refusal,
    refusal_for,
)
from sftp_server.handles import (
    MAX_READ_LENGTH,
    STAFF_READ_DENIED,
    DownloadHandle,
    TextHandle,
    UploadHandle,
)
from sftp_server.paramiko_fence import FencedSFTPServer, budget_channel_window
from sftp_server.receive_budget import ReceiveBudget
from sftp_server.vfs import (
    AgreementFile,
    InboxFile,
    PartnerFile,
    PartnerFolder,
    PortalEnrolmentFile,
    RecipientsFile,
    RecipientsFolder,
    Root,
    Target,
    canonical,
    resolve,
)

log = logging.getLogger(__name__)

SFTP_VERSION = 3
MIB = 1 << 20
# What limits@openssh.com advertises (OpenSSH's own sftp-server uses the same figures):
# clients then send 255 KiB reads and writes instead of falling back to 32 KiB.
MAX_PACKET_LENGTH = 256 * 1024
MAX_WRITE_LENGTH = MAX_READ_LENGTH
MAX_OPEN_HANDLES = 64
# How many of its own uploads a session remembers for the stat that follows a put.
REMEMBERED_UPLOADS = 256
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_EXCL
STOPPING_MESSAGE = "the server is shutting down; try again in a moment"
STOPPED_REASON = "the server stopped before the file was closed (drain time over)"

P = ParamSpec("P")
R = TypeVar("R")


class Activity:
    """What one connection's SFTP sessions are doing, for its supervisor.

    When they last did something (the idle timeout), and whether a request is running or
    a file is open (a stopping server lets those finish, within the drain time).
    """

    def __init__(self, draining: threading.Event | None = None) -> None:
        self._last = time.monotonic()
        self._requests = 0
        self._open_files: dict[int, Callable[[], int]] = {}
        self._changed = threading.Condition()
        # Set when the server starts to stop: new files are refused from then on.
        self.draining = draining or threading.Event()

    def idle_seconds(self) -> float:
        return time.monotonic() - self._last

    @contextmanager
    def request(self) -> Iterator[None]:
        """Mark one SFTP request as running (a CLOSE commits an upload meanwhile)."""
        with self._changed:
            self._requests += 1
            self._last = time.monotonic()
        try:
            yield
        finally:
            with self._changed:
                self._requests -= 1

    def session_started(self, session: object, open_files: Callable[[], int]) -> None:
        with self._changed:
            self._open_files[id(session)] = open_files

    def session_ended(self, session: object) -> None:
        with self._changed:
            self._open_files.pop(id(session), None)
            self._changed.notify_all()

    def transferring(self) -> bool:
        """Whether a request is running or a file is open in any session."""
        with self._changed:
            return self._requests > 0 or any(count() for count in self._open_files.values())

    def wait_sessions_ended(self, timeout: float) -> bool:
        """Wait until every session has cleaned up (aborted what it left open)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._open_files, timeout)


def _refuse(view: InboxView, exc: GatewayError, *, operation: str, path: str) -> StatusError:
    if isinstance(exc, DatabaseError):
        # No access decision was made; the core does not audit it, the log says why.
        log.warning("SFTP %s by %s not performed: %s", operation, view.actor.name,
                    exc.diagnostics())
    audit_refusal(view.app, view.actor, operation=operation, path=path, error=exc)
    return refusal_for(exc)


def guarded(operation: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Turn gateway errors of an ``InboxView`` method into audited refusals."""
    def decorate(method: Callable[..., R]) -> Callable[..., R]:
        @wraps(method)
        def run(view: InboxView, path: str, *args: Any) -> R:
            try:
                return method(view, path, *args)
            except GatewayError as exc:
                raise _refuse(view, exc, operation=operation, path=path) from exc
        return run
    return decorate


def _timestamp(moment: datetime) -> int:
    return int(moment.timestamp())


class ListedAttributes(SFTPAttributes):  # type: ignore[misc]  # paramiko ships no type hints.
    """Attributes in a directory listing, with our own ``ls -l`` line (``longname``)."""

    def __init__(self, longname: str) -> None:
        super().__init__()
        self.longname = longname

    def __str__(self) -> str:
        return self.longname


def folder_attributes(name: str | None = None) -> SFTPAttributes:
    attrs = SFTPAttributes() if name is None else ListedAttributes(
        f"drwx------   1 blindpost blindpost {0:>12} {'':>12} {name}")
    attrs.st_mode, attrs.st_size, attrs.st_uid, attrs.st_gid = stat_module.S_IFDIR | 0o700, 0, 0, 0
    if name is not None:
        attrs.filename = name
    return attrs


def file_attributes(entry: FileEntry, *, mode: int, listed: bool = False) -> SFTPAttributes:
    """A stored file: ciphertext size, upload time as mtime, expiry as atime.

    SFTP v3 has no expiry attribute; listings also show it in the group column. The
    ciphertext SHA-256 and the transfer id travel as extended attributes.
    """
    perms = "-r--------" if mode & 0o400 else "--w-------"
    longname = (f"{perms}   1 blindpost expires-{entry.expires_at:%Y-%m-%d} {entry.size:>12} "
                f"{entry.created_at:%b %d %H:%M} {entry.name}")
    attrs = ListedAttributes(longname) if listed else SFTPAttributes()
    attrs.st_mode, attrs.st_size = stat_module.S_IFREG | mode, entry.size
    attrs.st_uid = attrs.st_gid = 0
    attrs.st_mtime = _timestamp(entry.created_at)
    attrs.st_atime = _timestamp(entry.expires_at)
    attrs.attr = {CIPHERTEXT_SHA256: entry.sha256, TRANSFER_ID: entry.id}
    if listed:
        attrs.filename = entry.name
    return attrs


def text_attributes(size: int, name: str | None = None) -> SFTPAttributes:
    """A read-only virtual text file (a published recipient list)."""
    attrs = SFTPAttributes() if name is None else ListedAttributes(
        f"-r--------   1 blindpost blindpost {size:>12} {'':>12} {name}")
    attrs.st_mode, attrs.st_size = stat_module.S_IFREG | 0o400, size
    attrs.st_uid = attrs.st_gid = 0
    if name is not None:
        attrs.filename = name
    return attrs


class InboxView(SFTPServerInterface):  # type: ignore[misc]  # paramiko ships no type hints.
    """What one signed-in account sees over SFTP; every path goes through ``resolve``.

    Staff upload ``X`` and the partner receives ``X.age``. Clients that check an upload
    by its size (paramiko's ``put``, WinSCP) stat ``X`` right after closing it: the view
    remembers what this session uploaded, and answers with the stored file's attributes
    and the size that was uploaded. Any other stat of ``X`` shows the stored ``X.age``.
    """

    def __init__(self, gate: LoginGate, *args: Any, reorder_limit: int, budget: MemoryBudget,
                 **kwargs: Any) -> None:
        super().__init__(gate, *args, **kwargs)
        assert gate.actor is not None, "the SFTP subsystem only starts after sign-in"
        self.gate = gate
        self.app: App = gate.app
        self.actor: Actor = gate.actor
        self._reorder_limit = reorder_limit
        self._budget = budget
        # Canonical path of each file this session uploaded -> bytes received.
        self._uploaded: OrderedDict[str, int] = OrderedDict()

    @property
    def _file_mode(self) -> int:
        return 0o400 if self.actor.role is Role.PARTNER else 0o200

    def _target(self, path: str) -> Target:
        return resolve(path, self.actor.role)

    @guarded("opendir")
    def list_folder(self, path: str) -> list[SFTPAttributes]:
        target, transfers = self._target(path), self.app.transfers
        if isinstance(target, Root) and self.actor.role is Role.STAFF:
            # Only partners that can receive now: a folder staff cannot upload into is
            # not offered (stat and open still explain why).
            return [folder_attributes(slug) for slug in
                    transfers.active_partners(self.actor, receiving=True)]
        if isinstance(target, RecipientsFolder):
            return [text_attributes(len(self._recipient_list(slug)), slug)
                    for slug in transfers.active_partners(self.actor)]
        if isinstance(target, Root):
            entries = transfers.inbox(self.actor)
        elif isinstance(target, PartnerFolder):
            entries = transfers.inbox(self.actor, target.slug)
        else:
            raise UsageError("not a folder")
        return [file_attributes(e, mode=self._file_mode, listed=True) for e in entries]

    @guarded("stat")
    def stat(self, path: str) -> SFTPAttributes:
        target, transfers = self._target(path), self.app.transfers
        if isinstance(target, Root | RecipientsFolder):
            return folder_attributes()
        if isinstance(target, RecipientsFile):
            return text_attributes(len(self._recipient_list(target.slug)))
        if isinstance(target, AgreementFile):
            return text_attributes(len(self._agreement(target.slug)))
        if isinstance(target, PortalEnrolmentFile):
            # Only its size: the code is issued by the read, never by a stat.
            return text_attributes(rendered_size(self.actor.name))
        if isinstance(target, PartnerFolder):
            if target.slug not in transfers.active_partners(self.actor):
                raise NotFoundError("no such partner folder")
            return folder_attributes()
        if isinstance(target, PartnerFile):
            return self._stat_partner_file(target, canonical(path))
        entry = transfers.stat(self.actor, target.name)
        return file_attributes(entry, mode=self._file_mode)

    def _recipient_list(self, slug: str) -> bytes:
        return self.app.keys.published(self.actor, slug).encode("utf-8")

    def _agreement(self, slug: str) -> bytes:
        terms = self.app.agreements.published(self.actor, slug)
        if terms is None:
            raise NotFoundError(f"partner {slug!r} has no data-sharing agreement")
        return render_terms(terms).encode("utf-8")

    def _stat_partner_file(self, target: PartnerFile, path: str) -> SFTPAttributes:
        """A name in a partner folder: the file itself, or the ``.age`` it was stored as."""
        transfers = self.app.transfers
        try:
            entry = transfers.stat(self.actor, target.name, partner=target.slug)
        except NotFoundError:
            if target.name.endswith(AGE_SUFFIX):
                raise
            entry = transfers.stat(self.actor, target.name + AGE_SUFFIX, partner=target.slug)
        attrs = file_attributes(entry, mode=self._file_mode)
        if path in self._uploaded and not target.name.endswith(AGE_SUFFIX):
            attrs.st_size = self._uploaded[path]
        return attrs

    def _remember_upload(self, path: str, size: int) -> None:
        self._uploaded[path] = size
        self._uploaded.move_to_end(path)
        while len(self._uploaded) > REMEMBERED_UPLOADS:
            self._uploaded.popitem(last=False)

    def lstat(self, path: str) -> SFTPAttributes:
        # Nothing here is a symbolic link.
        return self.stat(path)

    @guarded("open")
    def open(self, path: str, flags: int, _attr: SFTPAttributes) -> SFTPHandle:
        target = self._target(path)
        if isinstance(target, InboxFile):
            if flags & WRITE_FLAGS:
                raise PolicyError("permission denied: inbox files are read-only")
            download = self.app.transfers.open_download(self.actor, target.name)
            return DownloadHandle(download, path=canonical(path))
        if isinstance(target, PartnerFile):
            return self._open_upload(target, flags, path=canonical(path))
        if isinstance(target, RecipientsFile):
            if flags & WRITE_FLAGS:
                raise PolicyError("permission denied: recipient lists are read-only")
            return TextHandle(self._recipient_list(target.slug), path=canonical(path))
        if isinstance(target, AgreementFile):
            if flags & WRITE_FLAGS:
                raise PolicyError("permission denied: agreements are read-only")
            return TextHandle(self._agreement(target.slug), path=canonical(path))
        if isinstance(target, PortalEnrolmentFile):
            if flags & WRITE_FLAGS:
                raise PolicyError("permission denied: /.portal-enrolment is read-only")
            issued = self.app.portal_enrolment.issue(self.actor)
            return TextHandle(render(issued).encode("utf-8"), path=canonical(path))
        raise PolicyError("permission denied: not a file")

    def _open_upload(self, target: PartnerFile, flags: int, *, path: str) -> UploadHandle:
        if flags & os.O_RDWR or not flags & os.O_WRONLY:
            raise PolicyError(STAFF_READ_DENIED)
        if flags & os.O_APPEND:
            raise UsageError("appending is not supported; upload the whole file again")
        if flags & os.O_EXCL and self._upload_exists(target):
            raise ConflictError("a file with this name is already waiting for the partner")
        upload = self.app.transfers.begin_upload(self.actor, partner=target.slug,
                                                 name=target.name)
        return UploadHandle(upload, path=path,
                            budget=self._budget.child(self._reorder_limit, scope="upload"),
                            on_commit=lambda _entry, size: self._remember_upload(path, size))

    def _upload_exists(self, target: PartnerFile) -> bool:
        stored = target.name if target.name.endswith(AGE_SUFFIX) else target.name + AGE_SUFFIX
        try:
            self.app.transfers.stat(self.actor, stored, partner=target.slug)
        except NotFoundError:
            return False
        return True

    @guarded("remove")
    def remove(self, path: str) -> int:
        """Withdraw a file from an inbox (audited by the gateway)."""
        target = self._target(path)
        if isinstance(target, InboxFile):
            self.app.transfers.withdraw(self.actor, target.name)
        elif isinstance(target, PartnerFile):
            self.app.transfers.withdraw(self.actor, target.name, partner=target.slug)
        else:
            raise PolicyError("permission denied: only files can be removed")
        return SFTP_OK

    @guarded("realpath")
    def canonicalize(self, path: str) -> str:
        return canonical(path)

    @guarded("rename")
    def rename(self, _oldpath: str, _newpath: str) -> int:
        raise PolicyError("permission denied: files cannot be renamed")

    @guarded("rename")
    def posix_rename(self, _oldpath: str, _newpath: str) -> int:
        raise PolicyError("permission denied: files cannot be renamed")

    @guarded("mkdir")
    def mkdir(self, _path: str, _attr: SFTPAttributes) -> int:
        raise PolicyError("permission denied: folders cannot be created")

    @guarded("rmdir")
    def rmdir(self, _path: str) -> int:
        raise PolicyError("permission denied: folders cannot be removed")

    @guarded("setstat")
    def chattr(self, _path: str, _attr: SFTPAttributes) -> int:
        raise PolicyError("permission denied: file attributes cannot be changed")

    @guarded("symlink")
    def symlink(self, _target_path: str, _path: str) -> int:
        raise PolicyError("permission denied: links cannot be created")

    @guarded("readlink")
    def readlink(self, _path: str) -> str:
        raise PolicyError("permission denied: there are no links")


class BlindpostSFTPServer(FencedSFTPServer):
    """paramiko's SFTP wire server with Blindpost's statuses, limits and clean-up."""

    def __init__(self, channel: Channel, name: str, server: LoginGate, *,
                 activity: Activity, reorder_limit: int, budget: MemoryBudget,
                 receive: ReceiveBudget) -> None:
        super().__init__(channel, name, server, sftp_si=InboxView,
                         reorder_limit=reorder_limit, budget=budget)
        self._activity = activity
        self._view: InboxView = self.server
        self._channel = channel
        self._last_told: str | None = None
        # This channel's window is its share of the process's receive budget from now
        # on (built in the transport's thread, before anything was read from it).
        self._window = receive.open(granted=channel.in_window_size)
        try:
            budget_channel_window(channel, self._window)
        except BaseException:
            self._window.close()
            raise
        # Registered last: paramiko calls finish_subsystem (which unregisters) once the
        # handler's thread has started, whatever happens in it.
        activity.session_started(self, lambda: len(self.file_table))

    def server_version_reply(self, _client_version: int) -> Message:
        # Like paramiko's, but advertising limits@openssh.com instead of check-file
        # (whose only hashes, MD5 and SHA-1, we do not offer).
        msg = Message()
        msg.add_int(SFTP_VERSION)
        for extension in ("limits@openssh.com", DECLARE_RECIPIENTS, DECLARE_CONTENTS):
            msg.add_string(extension)
            msg.add_string("1")
        return msg

    def max_packet_length(self) -> int:
        return MAX_PACKET_LENGTH + 1024

    def handle_request(self, kind: int, request_number: int, msg: Message) -> None:
        with self._activity.request():
            self._answer(kind, request_number, msg)

    def _answer(self, kind: int, request_number: int, msg: Message) -> None:
        try:
            if kind not in CMD_NAMES:
                # paramiko would raise KeyError naming the type; answer like any server.
                self.send_status(request_number, SFTP_OP_UNSUPPORTED,
                                 f"unknown request type {kind}")
            elif kind == CMD_EXTENDED:
                self._extended(request_number, msg)
            elif kind == CMD_CLOSE:
                self._close(request_number, msg.get_binary())
            elif kind == CMD_READ and self.sock.closed:
                # The connection is gone and no answer reaches the client, but reads it
                # sent ahead may still wait here: serving one would count bytes it never
                # receives toward its download limit (gateway.served).
                return
            elif kind in (CMD_READ, CMD_WRITE):
                # Answered here rather than by paramiko, whose copies of the data cost
                # memory per transfer (send_data, write_request).
                (self._read if kind == CMD_READ else self._write)(request_number, msg)
            elif kind in (CMD_OPEN, CMD_OPENDIR) and self._handle_count() >= MAX_OPEN_HANDLES:
                self.send_status(request_number, SFTP_FAILURE, "too many open files")
            elif kind == CMD_OPEN and self._activity.draining.is_set():
                self.send_status(request_number, SFTP_FAILURE, STOPPING_MESSAGE)
            else:
                self.dispatch(kind, request_number, msg)
        except StatusError as refusal:
            self._send_refusal(request_number, refusal)
        except GatewayError as exc:
            self._refuse_handle_operation(request_number, kind, msg, exc)
        except UnicodeDecodeError:
            self.send_status(request_number, SFTP_BAD_MESSAGE, "names must be UTF-8")
        except Exception:
            log.exception("SFTP request failed for %s", self._view.actor.name)
            self.send_status(request_number, SFTP_FAILURE, INTERNAL_MESSAGE)

    def _refuse_handle_operation(self, request_number: int, t: int, msg: Message,
                                 exc: GatewayError) -> None:
        """A read, write, fstat or close on an open handle was refused."""
        operation = CMD_NAMES.get(t, str(t))
        refusal = _refuse(self._view, exc, operation=operation, path=self._handle_path(msg))
        self._send_refusal(request_number, refusal)

    def _send_refusal(self, request_number: int, refusal: StatusError) -> None:
        """Send the refusal's status, and tell its reason on the channel's stderr.

        OpenSSH's ``sftp`` shows only the status code's own text ("Permission denied"),
        never the server's message; what the session writes to stderr it does print.
        A miss ("no such file") says nothing more than the status, unless the gateway
        knows why the file is gone (expired, used up, withdrawn, purged); the same
        reason is told once, not for every pipelined write it refuses.
        """
        self.send_status(request_number, refusal.code, refusal.message)
        if (refusal.code == SFTP_NO_SUCH_FILE and not refusal.tell) \
                or refusal.message == self._last_told:
            return
        self._last_told = refusal.message
        try:
            self._channel.send_stderr(f"blindpost: {refusal.message}\n".encode())
        except OSError:
            log.debug("could not tell %s why a request was refused", self._view.actor.name)

    def _handle_path(self, msg: Message) -> str:
        # Every handle request starts with the request id and the handle.
        peek = Message(msg.asbytes())
        peek.get_int()
        handle = self.file_table.get(peek.get_binary())
        return getattr(handle, "path", "(closed handle)")

    def _handle_count(self) -> int:
        return len(self.file_table) + len(self.folder_table)

    def _extended(self, request_number: int, msg: Message) -> None:
        tag = msg.get_text()
        if tag == "limits@openssh.com":
            reply = Message()
            reply.add_int(request_number)
            for value in (MAX_PACKET_LENGTH, MAX_READ_LENGTH, MAX_WRITE_LENGTH,
                          MAX_OPEN_HANDLES):
                reply.add_int64(value)
            self.send_packet(CMD_EXTENDED_REPLY, reply)
        elif tag == "posix-rename@openssh.com":
            self._view.posix_rename(msg.get_text(), msg.get_text())
        elif tag == DECLARE_RECIPIENTS:
            self._declare_recipients(request_number, msg)
        elif tag == DECLARE_CONTENTS:
            self._declare_contents(request_number, msg)
        else:
            self.send_status(request_number, SFTP_OP_UNSUPPORTED,
                              f"extension {tag[:64]!r} is not supported")

    def _declare_recipients(self, request_number: int, msg: Message) -> None:
        """``declare-recipients@blindpost``: the keys a pre-encrypted upload is for.

        A refusal aborts the upload, which the gateway audits itself.
        """
        handle = self.file_table.get(msg.get_binary())
        count = msg.get_int()
        if not isinstance(handle, UploadHandle) or count > MAX_DECLARED:
            self.send_status(request_number, SFTP_BAD_MESSAGE,
                              "declare-recipients needs an open upload and at most "
                              f"{MAX_DECLARED} fingerprints")
            return
        fingerprints = [msg.get_text() for _ in range(count)]
        try:
            handle.declare_recipients(fingerprints)
        except GatewayError as exc:
            refusal = refusal_for(exc)
            self.send_status(request_number, refusal.code, refusal.message)
            return
        self.send_status(request_number, SFTP_OK)

    def _declare_contents(self, request_number: int, msg: Message) -> None:
        """``declare-contents@blindpost``: what a pre-encrypted upload holds, as the
        sender's client read it. A refusal aborts the upload (audited by the gateway)."""
        handle = self.file_table.get(msg.get_binary())
        form = msg.get_text()
        count = msg.get_int()
        if not isinstance(handle, UploadHandle) or count > MAX_DECLARED_COLUMNS:
            self.send_status(request_number, SFTP_BAD_MESSAGE,
                              "declare-contents needs an open upload and at most "
                              f"{MAX_DECLARED_COLUMNS} columns")
            return
        columns = [msg.get_text() for _ in range(count)]
        records = msg.get_int64()
        try:
            handle.declare_contents(declared_contents(
                form, columns, None if records >= 1 << 63 else records))
        except GatewayError as exc:
            refusal = refusal_for(exc)
            self.send_status(request_number, refusal.code, refusal.message)
            return
        self.send_status(request_number, SFTP_OK)

    def _read(self, request_number: int, msg: Message) -> None:
        """paramiko's handling of a read, answered by :meth:`send_data` (no copies)."""
        handle = self.file_table.get(msg.get_binary())
        offset, length = msg.get_int64(), msg.get_int()
        if handle is None:
            self.send_status(request_number, SFTP_BAD_MESSAGE, "Invalid handle")
            return
        data = handle.read(offset, length)
        if isinstance(data, int):  # A handle may answer with a status code, as in paramiko.
            self.send_status(request_number, data)
        elif not data:
            self.send_status(request_number, SFTP_EOF)
        else:
            self.send_data(request_number, data)

    def _write(self, request_number: int, msg: Message) -> None:
        """paramiko's handling of a write, given the data as a view of the packet."""
        try:
            handle_id, offset, data = self.write_request(msg)
        except SFTPError:
            self.send_status(request_number, SFTP_BAD_MESSAGE, "malformed write request")
            return
        handle = self.file_table.get(handle_id)
        if handle is None:
            self.send_status(request_number, SFTP_BAD_MESSAGE, "Invalid handle")
            return
        code = handle.write(offset, data)
        if code == SFTP_OK:
            self.hold_ok(request_number)
        else:
            self.send_status(request_number, code)

    def before_write(self) -> None:
        """Queue the session's upload for its store before its next write is read.

        An S3 upload waits for a part buffer; waiting here rather than in the write
        leaves the write's data in the channel (at most the channel's window) and with
        the client, so that an upload in the queue holds no write of its own. Only a
        session with one upload open waits here: with several, one waiting for a buffer
        could keep the session from feeding another that holds one (they wait in the
        write, as before).
        """
        uploads = [handle for handle in self.file_table.values()
                   if isinstance(handle, UploadHandle)]
        if len(uploads) == 1:
            # Replies held back for a batch go out before a wait, not after it.
            uploads[0].ready(before_waiting=self.send_held)

    def _close(self, request_number: int, handle_id: bytes) -> None:
        if self.folder_table.pop(handle_id, None) is not None:
            self.send_status(request_number, SFTP_OK)
            return
        handle = self.file_table.pop(handle_id, None)
        if handle is None:
            self.send_status(request_number, SFTP_BAD_MESSAGE, "Invalid handle")
            return
        handle.close()
        self.send_status(request_number, SFTP_OK)

    def finish_subsystem(self) -> None:
        """The session ended: abort uploads left open, release downloads."""
        try:
            with contextlib.suppress(OSError, EOFError):
                self.send_held()
            self._abandon_open_files()
            super().finish_subsystem()
        finally:
            self._window.close()
            self._activity.session_ended(self)

    def _abandon_open_files(self) -> None:
        ended = self._view.gate.end_reason
        reason = (f"session ended: {ended}" if ended else STOPPED_REASON
                  if self._activity.draining.is_set()
                  else "connection closed before the file was closed")
        handles = list(self.file_table.values())
        self.file_table.clear()
        for handle in handles:
            try:
                handle.abandon(reason)
            except DatabaseError as exc:
                # The store side is already undone; only the audit record could not land.
                log.warning("could not record the abort of a file of %s: %s",
                            self._view.actor.name, exc.diagnostics())
            except GatewayError:
                log.exception("could not clean up a handle of %s", self._view.actor.name)
