"""Whether the clients' second and third threads would find a core to run on.

``send``, ``fetch``, ``encrypt`` and ``decrypt`` can seal or open chunks in two threads
and write output from a third: on two idle cores that nearly halves the time the cipher
takes. On a saturated machine it does the opposite: every hand-off between the threads
waits for the scheduler, and the same work measured slower and cost more CPU than one
thread doing it all (256 MiB decrypted to disk with a load average of 12 on 2 cores:
0.72-0.76 s with one thread and plain writes, 0.74-3.06 s with two threads and a
writer thread, in 4 MiB blocks). So the extra threads are used only when a core is free.

Blocks stay small, whatever the threads: a block is decrypted and then written while it
is still in the core's cache. 256 KiB blocks cost 0.23 s of CPU per 256 MiB decrypted to
disk, 4 MiB blocks 0.52-0.64 s (same machine, same minute); a writer thread of its own
gained nothing once blocks were small.
"""

from __future__ import annotations

import os


def spare_core() -> bool:
    """Whether this process may use more than one core: it may run on two or more, and
    the last minute's load average leaves at least one of them idle."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return cores >= 2 and load <= cores - 1


def chunk_threads() -> int:
    """Threads to seal or open chunks with: two if a core is free, else one."""
    return 2 if spare_core() else 1


def block_bytes(threads: int) -> int:
    """How much to read, seal or open at a time: 4 chunks, or 4 per thread."""
    return threads * 4 * 64 * 1024
