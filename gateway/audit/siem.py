"""Copies of each committed event for SIEMs: a JSON-lines file and, optionally, syslog.

The database is the record; these copies are conveniences written after the commit. A
failure to write one is logged, never raised: the change it describes already happened.
"""

from __future__ import annotations

import logging
import os
import syslog
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

_log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Receives the leaves of a committed transaction, in index order."""

    def emit(self, leaves: Sequence[bytes]) -> None:
        """Deliver the leaves; must not raise."""
        ...


class JsonlSink:
    """Appends each leaf as one line to a file created 0600 (``audit.jsonl``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, leaves: Sequence[bytes]) -> None:
        """Append the leaves; one ``write`` per batch keeps lines whole across processes."""
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, b"".join(leaf + b"\n" for leaf in leaves))
            finally:
                os.close(descriptor)
        except OSError as exc:
            _log.warning("audit copy to %s failed: %s", self.path, exc.strerror)


class SyslogSink:
    """Sends each leaf to the local syslog (facility authpriv), tagged ``blindpost-audit``."""

    def __init__(self) -> None:
        syslog.openlog("blindpost-audit", syslog.LOG_PID, syslog.LOG_AUTHPRIV)

    def emit(self, leaves: Sequence[bytes]) -> None:
        """Log one syslog message per leaf."""
        for leaf in leaves:
            syslog.syslog(syslog.LOG_INFO, leaf.decode())
