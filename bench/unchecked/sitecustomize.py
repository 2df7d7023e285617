"""Only for bench/payload_check.py's reference server (on its PYTHONPATH, never installed):
the payload check of pre-encrypted uploads replaced by one that clears every byte without
testing it, so that the benchmark can measure what the real check costs an SFTP upload.
Everything else (the check's thread, which stores the cleared bytes) is as in the gateway."""

from __future__ import annotations

from gateway import payload_check


class _Unchecked(payload_check.PayloadCheck):
    def feed(self, *pieces: bytes | memoryview) -> None:
        self.cleared += sum(len(piece) for piece in pieces)

    def finish(self) -> None:
        """Nothing to judge."""


payload_check.PayloadCheck = _Unchecked  # type: ignore[misc]
