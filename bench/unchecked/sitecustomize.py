"""Only for bench/payload_check.py's reference server (on its PYTHONPATH, never installed):
the payload check of pre-encrypted uploads, and the thread it runs on, replaced by one that
clears every byte at once, in the writer's thread, so that the benchmark can measure what
the real check costs an SFTP upload."""

from __future__ import annotations

from collections.abc import Sequence

from gateway import payload_check


class _Unchecked:
    def __init__(self, check: object, *, max_lag: int | None = None) -> None:
        del check, max_lag
        self.cleared = 0

    def raise_refusal(self) -> None:
        """Nothing is ever refused."""

    def feed(self, batch: Sequence[bytes]) -> None:
        self.cleared += sum(len(piece) for piece in batch)

    def finish(self) -> None:
        """Nothing to judge."""

    def cancel(self) -> None:
        """No thread to stop."""


payload_check.CheckThread = _Unchecked  # type: ignore[misc,assignment]
