"""What ``blindpost fetch`` fetched, per account at a gateway, so a second run skips it.

A file is remembered by its transfer id and ciphertext SHA-256 (both from the gateway's
listing). A download that began is remembered too, so that one whose last byte arrived
just before the program was stopped is finished from the local copy even when the
gateway no longer lists it (its download limit was reached by that very download).

The record is a JSON file, replaced atomically after every change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.client.files import write_private_text
from gateway.errors import UsageError

VERSION = 1
# Files live on the gateway for 30 days at most; older records only take space.
FORGET_AFTER = timedelta(days=180)


@dataclass(frozen=True)
class RemoteFile:
    """A file in the inbox, as the gateway lists it."""

    name: str
    size: int
    sha256: str
    transfer_id: str


class FetchedRecord:
    """The fetched and begun downloads of one account at one gateway."""

    def __init__(self, path: Path, account: str) -> None:
        self.path = path
        self.account = account

    def _load(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": VERSION, "accounts": {}}
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.path}: unreadable record of fetched files ({exc}); "
                             "move it away to start afresh") from None
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise UsageError(f"{self.path}: not a blindpost fetch record (version {VERSION})")
        return document

    def _mine(self, document: dict[str, Any]) -> dict[str, Any]:
        mine: dict[str, Any] = document["accounts"].setdefault(
            self.account, {"fetched": {}, "begun": {}})
        return mine

    def fetched(self) -> dict[str, str]:
        """The ciphertext SHA-256 of every fetched file, by transfer id."""
        return {tid: done["sha256"]
                for tid, done in self._mine(self._load())["fetched"].items()}

    def is_fetched(self, entry: RemoteFile) -> bool:
        done = self._mine(self._load())["fetched"].get(entry.transfer_id)
        return bool(done) and done["sha256"] == entry.sha256

    def begun(self) -> list[RemoteFile]:
        """Downloads that began and have not been recorded as fetched."""
        return [RemoteFile(**fields) for fields in self._mine(self._load())["begun"].values()]

    def mark_begun(self, entry: RemoteFile) -> None:
        document = self._load()
        self._mine(document)["begun"][entry.transfer_id] = asdict(entry)
        self._save(document)

    def forget_begun(self, entry: RemoteFile) -> None:
        """Drop a begun download that can no longer finish (the file is gone)."""
        document = self._load()
        if self._mine(document)["begun"].pop(entry.transfer_id, None) is not None:
            self._save(document)

    def mark_fetched(self, entry: RemoteFile, path: Path, *, now: datetime) -> None:
        document = self._load()
        mine = self._mine(document)
        mine["begun"].pop(entry.transfer_id, None)
        mine["fetched"][entry.transfer_id] = {"name": entry.name, "sha256": entry.sha256,
                                              "path": str(path), "fetched_at": now.isoformat()}
        horizon = (now - FORGET_AFTER).isoformat()
        for account in document["accounts"].values():
            account["fetched"] = {tid: done for tid, done in account["fetched"].items()
                                  if done["fetched_at"] >= horizon}
        self._save(document)

    def _save(self, document: dict[str, Any]) -> None:
        write_private_text(self.path, json.dumps(document, indent=1, sort_keys=True) + "\n")
