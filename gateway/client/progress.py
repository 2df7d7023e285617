"""Progress of file transfers: a bar per file on a terminal, nothing in between otherwise.

On a terminal every file gets a rich progress bar on standard error, with its rate and
the time left. Elsewhere (scripts, logs) nothing is drawn; the commands print one plain
outcome line per file when it is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol, Self

Advance = Callable[[int], None]


class Progress(Protocol):
    """Reports how far each file has come."""

    def file(self, label: str, total: int, *, done: int = 0) -> contextlib.AbstractContextManager[
            Advance]:
        """A context for one file; call the yielded function with each new byte count."""
        ...


class NoProgress:
    """Draws nothing."""

    @contextlib.contextmanager
    def file(self, _label: str, _total: int, *, done: int = 0) -> Iterator[Advance]:  # noqa: ARG002  # The interface has it.
        yield lambda _count: None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


class TerminalProgress:
    """One rich bar per file on standard error; a context manager around the whole run."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bars = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                  DownloadColumn(), TransferSpeedColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True))

    @contextlib.contextmanager
    def file(self, label: str, total: int, *, done: int = 0) -> Iterator[Advance]:
        task = self._bars.add_task(label, total=total, completed=done)
        yield lambda count: self._bars.advance(task, count)

    def __enter__(self) -> Self:
        self._bars.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bars.stop()
