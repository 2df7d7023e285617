"""The SHA-256 of a transfer's ciphertext, computed beside the transfer.

``send`` and ``fetch`` check it against the one the gateway recorded for the file.
"""

from __future__ import annotations

import hashlib
import queue
import threading

from gateway.client.files import OutputWriter

# Blocks (up to 255 KiB each) that may wait to be hashed.
_QUEUED = 64


class Hasher:
    """Hashes a transfer's ciphertext, with ``threaded`` in a thread beside the work
    (hashlib releases the GIL; up to :data:`_QUEUED` blocks wait, so the transfer rarely
    waits for it), else as each block arrives. The blocks must not change after
    :meth:`add` (``fetch`` hands it views of received packets, ``send`` of the packets it
    sends). With ``copy`` it also writes the ciphertext there (an armored file's
    NAME.age).

    Without a free core the thread only adds hand-offs that wait for the scheduler:
    256 MiB fetched with a load average of 1.5-2.5 on 2 cores took 1.07-1.30 s of CPU
    and 1.28-2.16 s with the hash inline, 1.23-1.42 s and 1.57-3.32 s with the thread
    (6 runs each, alternating).
    """

    def __init__(self, started: hashlib._Hash, copy: OutputWriter | None = None, *,
                 threaded: bool = True) -> None:
        self._hash = started
        self._copy = copy
        self._error: OSError | None = None
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(_QUEUED)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="blindpost-hash",
                                            daemon=True)
            self._thread.start()
        self._stopped = False

    def add(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._take(data)
        else:
            self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._take(data)

    def _take(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        if self._copy is not None and self._error is None:
            try:
                self._copy.write(data)
            except OSError as exc:
                self._error = exc

    def finish(self) -> str:
        self.stop()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
