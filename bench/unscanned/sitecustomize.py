"""Only for bench/data_elements.py's reference server (on its PYTHONPATH, never installed):
the header parse and record count of plaintext uploads replaced by a no-op, so that the
benchmark can measure what reading the data elements costs an SFTP upload."""

from __future__ import annotations

from gateway import transfers
from gateway.data_elements import EMPTY, Contents


class _Unscanned:
    header = None

    def feed(self, data: bytes | memoryview) -> None:
        """Nothing is read."""

    def finish(self) -> Contents:
        return Contents(EMPTY, (), 0)


transfers.ContentScan = _Unscanned  # type: ignore[misc,assignment]
