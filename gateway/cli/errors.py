"""The one place where the CLI turns failures into a message and an exit code.

Exit codes: 0 success, 1 the operation failed, 2 usage error (click's own usage errors
exit 2 as well). Commands raise; :func:`exit_with` prints one ``blindpost: error:`` line
(a verification failure adds one line per finding) and exits.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

from gateway.errors import GatewayError, UsageError
from gateway.terminal import shown_lines


class CommandError(GatewayError):
    """The command could not do what was asked (exit 1)."""


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Stop the command with ``message``: exit 2 for a usage error, else 1."""
    raise (UsageError if code == 2 else CommandError)(message)


def from_os_error(exc: OSError) -> CommandError:
    """An operating-system failure (a file that cannot be opened) as a command error."""
    name = f"{exc.filename}: " if exc.filename else ""
    return CommandError(f"{name}{exc.strerror or exc}")


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Let expected failures reach the CLI's one error handler as gateway errors."""
    try:
        yield
    except OSError as exc:
        raise from_os_error(exc) from exc


def exit_code(exc: GatewayError) -> int:
    return 2 if isinstance(exc, UsageError) else 1


def exit_with(exc: GatewayError) -> NoReturn:
    """Print ``exc`` as the command's error and exit with its code."""
    # A message may carry a remote party's words: no control character of theirs
    # reaches the terminal.
    # Written without click, which the file conversions run without (gateway.cli.conversions).
    sys.stderr.write(f"blindpost: error: {shown_lines(exc.diagnostics())}\n")
    sys.stderr.flush()
    sys.exit(exit_code(exc))
