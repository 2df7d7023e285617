"""The partner's data-sharing agreement on a staff machine: fetched, pinned, applied.

``blindpost send`` reads the agreement the gateway publishes (``/.agreements/PARTNER``,
:mod:`gateway.agreement_terms`) and checks each file against it before encrypting. The
agreement is pinned on first use, in ``known_agreements`` beside the pinned keys: a
gateway that later publishes a *looser* agreement (more columns, a higher limit, files
of unknown structure allowed, or none at all) is refused and the new one recorded in
``pending_agreements``, until ``blindpost trust PARTNER`` shows what it widens and the
person accepts it; so a compromised server cannot widen what staff send. A stricter one
is pinned at once, since it only refuses more.

Both files are JSON: ``{"GATEWAY PARTNER": "<published agreement text>"}`` ("" for no
agreement), 0600.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import agreement_terms
from gateway.agreement_terms import Terms
from gateway.client.files import write_private_text
from gateway.client.sftp import SFTPSession
from gateway.data_elements import Contents, ContentScan
from gateway.errors import NotFoundError, PolicyError, RemoteError, UsageError
from gateway.sftp_extensions import AGREEMENTS_FOLDER

READ_BLOCK = 1 << 20


class AgreementLoosenedError(PolicyError):
    """The gateway publishes an agreement that allows more than the pinned one."""


def partner_agreement(sftp: SFTPSession, *, gateway: str, partner: str, pins: Path,
                      pending: Path, notice: Callable[[str], None]) -> Terms | None:
    """The partner's agreement as published, checked against (or pinned as) the pin."""
    try:
        text = sftp.read_small(f"/{AGREEMENTS_FOLDER}/{partner}",
                               limit=agreement_terms.MAX_TERMS_BYTES)
    except NotFoundError:
        current = None
    else:
        current = agreement_terms.parse(text.decode("utf-8", "replace"))
        if current.partner != partner:
            raise RemoteError(f"the gateway sent the agreement of {current.partner!r} when "
                              f"asked for {partner!r}")
    stored = _load(pins)
    key = f"{gateway} {partner}"
    pinned = agreement_terms.parse(stored[key]) if key in stored else None
    waiting = _load(pending)
    if pinned is not None:
        wider = widened(pinned, current)
        if wider:
            waiting[key] = agreement_terms.render(current) if current is not None else ""
            _save(pending, waiting)
            raise AgreementLoosenedError(
                f"the gateway now publishes a data-sharing agreement with {partner} that "
                f"allows more than the one pinned here ({'; '.join(wider)}); nothing was "
                f"sent. Check the change with the registry, then run "
                f"`blindpost trust {partner}`")
    if key in waiting:
        # Back to what is pinned (or stricter): a change recorded earlier must not be
        # trusted later by mistake.
        del waiting[key]
        _save(pending, waiting)
    if current is not None and stored.get(key) != agreement_terms.render(current):
        stored[key] = agreement_terms.render(current)
        _save(pins, stored)
        if pinned is None:
            notice(f"pinned the data-sharing agreement of {partner} on first use: columns "
                   f"{', '.join(current.columns)}")
    return current


def widened(pinned: Terms, current: Terms | None) -> list[str]:
    """What ``current`` (None: no agreement) allows beyond ``pinned``."""
    return (agreement_terms.looser(pinned, current) if current is not None
            else ["no agreement at all"])


@dataclass(frozen=True)
class WaitingAgreement:
    """A looser agreement ``send`` refused, waiting for ``blindpost trust``."""

    gateway: str
    partner: str
    pinned: Terms | None
    current: Terms | None

    def describe(self) -> list[str]:
        wider = widened(self.pinned, self.current) if self.pinned is not None else []
        return [f"the data-sharing agreement with {self.partner} at {self.gateway} now "
                f"allows more: {'; '.join(wider) or 'nothing more'}"]


def waiting_agreements(pins: Path, pending: Path, partner: str,
                       gateway: str | None) -> list[WaitingAgreement]:
    """The agreement changes of ``partner`` waiting (at ``gateway``, or anywhere)."""
    stored = _load(pins)
    found = []
    for key, text in sorted(_load(pending).items()):
        where, _, slug = key.rpartition(" ")
        if slug == partner and (gateway is None or where == gateway):
            pinned = agreement_terms.parse(stored[key]) if key in stored else None
            found.append(WaitingAgreement(where, slug, pinned,
                                          agreement_terms.parse(text) if text else None))
    return found


def accept(pins: Path, pending: Path, change: WaitingAgreement) -> None:
    """Pin a waiting agreement (no agreement: drop the pin) and forget it as waiting."""
    key = f"{change.gateway} {change.partner}"
    stored, waiting = _load(pins), _load(pending)
    if change.current is None:
        stored.pop(key, None)
    else:
        stored[key] = agreement_terms.render(change.current)
    waiting.pop(key, None)
    _save(pins, stored)
    _save(pending, waiting)


def _save(path: Path, document: dict[str, str]) -> None:
    write_private_text(path, json.dumps(document, indent=1, sort_keys=True) + "\n")


def _load(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a pinned-agreements file ({exc})") from None
    if not isinstance(document, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in document.items()):
        raise UsageError(f"{path}: not a pinned-agreements file")
    return document


def read_contents(path: Path) -> Contents:
    """What a local file holds (header and record count), read once before encrypting."""
    scanner = ContentScan()
    buffer = memoryview(bytearray(READ_BLOCK))
    with path.open("rb") as source:
        while count := source.readinto(buffer):
            # The scanner copies what it keeps: the buffer can be given as it is.
            scanner.feed(buffer[:count])
            if scanner.header is not None and scanner.header.opaque:
                # Nothing after the header changes what an opaque file is said to hold:
                # a 1 GiB binary file is not read twice.
                break
    return scanner.finish()
