"""The ``blindpost`` command line: one program for operators, staff, partners and auditors.

Exit codes: 0 success, 1 the operation failed, 2 usage error.

The program's commands are click's (:mod:`gateway.cli.program`). This module is where the
program starts, and loads nothing else: ``encrypt`` and ``decrypt`` from one file to
another, the commands partners and staff run most and the ones timed against age, are
read and run without click when their command line allows
(:func:`gateway.cli.conversions.run_quick`); every other command line goes to click.
"""

from __future__ import annotations

import atexit
import os
import sys


def run() -> None:
    """The ``blindpost`` program (its console script and ``python -m gateway.cli``)."""
    if sys.argv[1:2] in (["encrypt"], ["decrypt"]):
        from gateway.cli.conversions import run_quick

        run_quick(sys.argv[1:])  # Returns only if the command line is not one it runs.
    from gateway.cli.program import run as run_program

    run_program()


def exit_at_once() -> None:
    """End the process now, without the interpreter's teardown (freeing every module
    and object, some 5 ms of CPU after `blindpost encrypt -o` of any size), if nothing
    is left for the teardown to do: no other thread runs, no exit handler is registered
    (``atexit``), and standard output and error are flushed. Otherwise return, and the
    process ends as usual."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    if atexit._ncallbacks():  # The only way to ask; typeshed has it.
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # A closed or broken stream: let Python report it.
        return
    os._exit(0)
