"""``blindpost send``: encrypt on the staff machine to pinned keys, upload, verify.

The plaintext never leaves the machine and never touches its disk again: each file is
read, encrypted while streaming to the partner's published keys (checked against the
pins first), and uploaded as ``NAME.age``; the gateway stores it as it is. After the
upload the SHA-256 the gateway recorded must equal the one computed here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import envelope, recipient_list
from gateway.agreement_terms import Terms
from gateway.client.agreement_pins import read_contents
from gateway.client.cores import block_bytes, chunk_threads, spare_core
from gateway.client.hashing import Hasher
from gateway.client.progress import Progress
from gateway.client.recipient_pins import Change, PinFile, compare, pins_of
from gateway.client.sftp import (
    OPEN_CREATE,
    OPEN_TRUNCATE,
    OPEN_WRITE,
    SFTPSession,
    Writer,
)
from gateway.data_elements import Contents, ContentScan
from gateway.errors import GatewayError, NotFoundError, PolicyError, RemoteError
from gateway.sftp_extensions import CIPHERTEXT_SHA256, RECIPIENTS_FOLDER


class RecipientsChangedError(PolicyError):
    """The partner's published keys differ from the pinned ones."""

    def __init__(self, change: Change) -> None:
        super().__init__(f"the keys of {change.partner} changed since you pinned them; "
                         f"nothing was sent. Check the change with the registry, then run "
                         f"`blindpost trust {change.partner}`")
        self.change = change


@dataclass
class SendResult:
    """The outcome of one file."""

    file: str
    remote: str
    ok: bool = False
    size: int = 0
    ciphertext_size: int = 0
    sha256: str = ""
    seconds: float = 0.0
    error: str | None = None


class LocalReadError(Exception):
    """Reading a local file failed mid-upload: the connection must be dropped so that the
    gateway discards the half-sent file (closing it would commit it)."""


def partner_recipients(sftp: SFTPSession, *, gateway: str, partner: str, pins: PinFile,
                       pending: PinFile, notice: Callable[[str], None]
                       ) -> recipient_list.RecipientList:
    """The partner's published keys, checked against (or pinned as) the pinned ones."""
    try:
        text = sftp.read_small(f"/{RECIPIENTS_FOLDER}/{partner}",
                               limit=recipient_list.MAX_LIST_BYTES)
    except NotFoundError:
        raise NotFoundError(f"the gateway has no active partner {partner!r}") from None
    published = recipient_list.parse(text.decode("utf-8", "replace"))
    if published.partner != partner:
        raise RemoteError(f"the gateway sent the keys of {published.partner!r} when asked "
                          f"for {partner!r}")
    if not published.keys:
        raise PolicyError(f"partner {partner!r} has no approved key yet; nothing was sent")
    current = pins_of(published)
    pinned = pins.load().get((gateway, partner))
    if pinned is None:
        pins.replace(gateway, partner, current)
        notice(f"pinned the keys of {partner} on first use (compare them with the partner):")
        for key in current:
            notice(f"  {key.describe()}")
        return published
    change = compare(gateway, partner, pinned, current)
    if change is not None:
        pending.replace(gateway, partner, current)
        raise RecipientsChangedError(change)
    if (gateway, partner) in pending.load():
        # The gateway is back to the pinned keys: a change recorded earlier must not be
        # trusted later by mistake.
        pending.replace(gateway, partner, None)
    return published


def send_file(sftp: SFTPSession, *, partner: str, path: Path,
              recipients: recipient_list.RecipientList, progress: Progress,
              terms: Terms | None = None) -> SendResult:
    """Check ``path`` against the partner's agreement, then encrypt it while uploading it
    to the partner's folder, declaring its columns and records; verify the hash.

    Raises :class:`LocalReadError` if the local file cannot be read to its end; every
    other failure (a refusal by the agreement among them) is in the result.
    """
    result = SendResult(str(path), f"/{partner}/{path.name}.age")
    started = time.monotonic()
    try:
        contents = _checked_contents(path, terms)
        _upload(sftp, path, result, recipients, progress, contents)
        _verify(sftp, result)
    except GatewayError as exc:
        result.error = exc.diagnostics()
    result.seconds = time.monotonic() - started
    result.ok = result.error is None
    return result


def _checked_contents(path: Path, terms: Terms | None) -> Contents:
    """What the file holds, refused here (before anything is encrypted or sent) when it
    is outside the agreement."""
    try:
        contents = read_contents(path)
    except OSError as exc:
        raise LocalReadError(f"{path}: {exc.strerror or exc}") from None
    if terms is not None:
        terms.check(contents)
    return contents


def _upload(sftp: SFTPSession, path: Path, result: SendResult,
            recipients: recipient_list.RecipientList, progress: Progress,
            contents: Contents) -> None:
    handle = sftp.open(result.remote, OPEN_WRITE | OPEN_CREATE | OPEN_TRUNCATE)
    # The ciphertext is hashed as it is sent: with a core to spare in a thread, from the
    # requests themselves (taking it off the thread that seals and sends).
    hasher = Hasher(hashlib.sha256(), threaded=spare_core())
    writer = sftp.writer(handle, sent=hasher.add)
    try:
        sftp.declare_recipients(handle, sorted(recipients.fingerprints))
        sftp.declare_contents(handle, contents)
        _encrypt(path, writer, recipients.recipients(), progress, result, contents)
        writer.finish()
    except GatewayError:
        # The gateway discarded the upload; closing the handle only confirms that.
        writer.abandon()
        with contextlib.suppress(GatewayError):
            sftp.close(handle)
        raise
    finally:
        hasher.stop()
    sftp.close(handle)
    result.ciphertext_size, result.sha256 = writer.written, hasher.finish()


def _encrypt(path: Path, sink: Writer, recipients: list[envelope.Recipient],
             progress: Progress, result: SendResult, checked: Contents) -> None:
    # With a core to spare, chunks are sealed in two threads (gateway.client.cores).
    threads = chunk_threads()
    buffer = memoryview(bytearray(block_bytes(threads)))
    try:
        source = path.open("rb")
    except OSError as exc:
        raise LocalReadError(f"{path}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError, AttributeError):
        # The file is read once, in order: let the kernel read further ahead.
        os.posix_fadvise(source.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    # The file is read again while it is encrypted: it must hold what was checked.
    rescan = ContentScan()
    with source, progress.file(path.name, path.stat().st_size) as advance, \
            envelope.Encryptor(sink, recipients, threads=threads) as encryptor:
        while True:
            try:
                count = source.readinto(buffer)
            except OSError as exc:
                raise LocalReadError(f"{path}: {exc.strerror or exc}") from None
            if not count:
                break
            # The scanner copies what it keeps (for an opaque file, nothing).
            rescan.feed(buffer[:count])
            encryptor.write(buffer[:count])
            result.size += count
            advance(count)
        if rescan.finish() != checked:
            # What was checked is not what was sent: hanging up discards the upload.
            raise LocalReadError(f"{path}: changed while it was being sent")


def _verify(sftp: SFTPSession, result: SendResult) -> None:
    recorded = sftp.stat(result.remote).extended.get(CIPHERTEXT_SHA256)
    if recorded == result.sha256:
        return
    try:
        sftp.remove(result.remote)
        withdrawn = "; the file was withdrawn"
    except GatewayError:
        withdrawn = "; withdrawing it failed too, ask the registry to remove it"
    raise RemoteError(f"the gateway recorded SHA-256 {recorded or 'nothing'} but "
                      f"{result.sha256} was sent{withdrawn}")
