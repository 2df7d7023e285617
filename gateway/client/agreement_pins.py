"""The partner's data-sharing agreement on a staff machine: fetched, pinned, applied.

``blindpost send`` reads the agreement the gateway publishes (``/.agreements/PARTNER``,
:mod:`gateway.agreement_terms`) and checks each file against it before encrypting. The
agreement is pinned on first use, in ``known_agreements`` beside the pinned keys: a
gateway that later publishes a *looser* agreement (more columns, a higher limit, files
of unknown structure allowed, or none at all) is refused, so a compromised server
cannot widen what staff send; a stricter one is accepted and pinned at once, since it
only refuses more.

The file is JSON: ``{"GATEWAY PARTNER": "<published agreement text>"}``, 0600.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
                      notice: Callable[[str], None]) -> Terms | None:
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
    if pinned is not None:
        wider = (agreement_terms.looser(pinned, current) if current is not None
                 else ["no agreement at all"])
        if wider:
            raise AgreementLoosenedError(
                f"the gateway now publishes a data-sharing agreement with {partner} that "
                f"allows more than the one pinned here ({'; '.join(wider)}); nothing was "
                f"sent. If the registry confirms the change, remove the entry for "
                f"{partner} from {pins}")
    if current is not None and stored.get(key) != agreement_terms.render(current):
        stored[key] = agreement_terms.render(current)
        write_private_text(pins, json.dumps(stored, indent=1, sort_keys=True) + "\n")
        if pinned is None:
            notice(f"pinned the data-sharing agreement of {partner} on first use: columns "
                   f"{', '.join(current.columns)}")
    return current


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
    buffer = bytearray(READ_BLOCK)
    with path.open("rb") as source:
        while count := source.readinto(buffer):
            scanner.feed(bytes(memoryview(buffer)[:count]))
    return scanner.finish()
