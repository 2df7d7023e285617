"""Only for bench/payload_check.py's reference server (on its PYTHONPATH, never installed):
the payload check of pre-encrypted uploads replaced by one that clears every byte at once,
so that the benchmark can measure what the real check costs an SFTP upload."""

from __future__ import annotations

from gateway import payload_check


class _Unchecked:
    def __init__(self, *, armored: bool) -> None:
        del armored
        self.cleared = 0

    def feed(self, data: bytes | memoryview) -> None:
        self.cleared += len(data)

    def finish(self) -> None:
        """Nothing to judge."""


payload_check.PayloadCheck = _Unchecked  # type: ignore[misc,assignment]
