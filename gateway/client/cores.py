"""Whether the clients' second and third threads would find a core to run on.

``send`` and ``fetch`` can seal or open chunks in two threads; ``encrypt -o`` and
``decrypt -o`` instead read and write in threads of their own beside one that seals or
opens (:mod:`gateway.client.files`). On two idle cores that takes work off the thread
that would otherwise do everything (256 MiB encrypted to disk: that thread's CPU 0.30-0.32
s with the reader and writer threads, against 0.37-0.40 s alone, start-up included; an
estimate from per-thread CPU, as no idle machine was at hand). On a saturated machine it
does the opposite: every hand-off between the threads waits for the scheduler, and the
same work measured slower and cost more CPU than one thread doing it all (256 MiB
decrypted with a load average of 12 on 2 cores: 0.72-0.76 s with one thread, 0.74-3.06 s
with two chunk threads and a writer thread; 1 GiB at a load of 14: 3.4-4.6 s alone,
4.7-7.0 s with the writer thread). So the extra threads are used only when a core is free.

``encrypt -o`` and ``decrypt -o`` between regular files are the exception
(:mod:`gateway.client.ranges`): their workers (processes) hand nothing to each other,
each takes the file's next batch of chunks and does it alone, so on a busy machine a
worker waits for a core without making the others wait; they run one worker per core
the process may use.

Blocks stay small, whatever the threads: a block is decrypted and then written while it
is still in the core's cache. 256 KiB blocks cost 0.23 s of CPU per 256 MiB decrypted to
disk, 4 MiB blocks 0.52-0.64 s (same machine, same minute).
"""

from __future__ import annotations

import os


def spare_core() -> bool:
    """Whether this process may use more than one core: it may run on two or more, and
    the last minute's load average leaves at least one of them idle."""
    cores = _usable_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return cores >= 2 and load <= cores - 1


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        return os.cpu_count() or 1


def chunk_threads() -> int:
    """Threads to seal or open chunks with: two if a core is free, else one."""
    return 2 if spare_core() else 1


def block_bytes(threads: int) -> int:
    """How much to read, seal or open at a time: 4 chunks, or 4 per thread."""
    return threads * 4 * 64 * 1024


# Range workers beyond this would only queue for the file's write lock: the kernel
# writes into one file's page cache one call at a time. (Measured on 2 cores only.)
_MAX_RANGE_WORKERS = 4


def range_workers() -> int:
    """Workers (this process and helpers) for :mod:`gateway.client.ranges`: one per
    usable core, at most 4."""
    return max(1, min(_usable_cores(), _MAX_RANGE_WORKERS))
