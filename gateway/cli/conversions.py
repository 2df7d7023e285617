"""``encrypt`` and ``decrypt``: what they do, and their common form read without click.

The commands' options and help are click's (:mod:`gateway.cli.crypto`); what they do is
here, in functions that take the parsed values, so that the program can also run them
without loading click. Encrypting or decrypting one file into another (``-o``) is what
partners and staff run most, often over many files in a loop, and what is timed against
age; loading click (which imports :mod:`inspect`) took about a fifth of its start.

:func:`run_quick` reads a command line only when it is one of those conversions in a
form it reads exactly as click would: each option by its exact short or long name, its
value the next argument (or after ``=`` for a long name) and not starting with ``-``,
each single-valued option at most once, one input that is an existing regular file, an
output that is not a directory, and every ``-R`` or ``-i`` file a file that exists; each
existing file readable, as click requires.
Anything else (``--help``, ``-a``, ``-rVALUE``, ``--``, standard input or output, a
missing file, an unknown option) goes to click, which either runs it or says what is
wrong with it. ``tests/unit/gateway/cli/test_quick_conversions.py`` compares the two
readers over generated command lines.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn, Protocol, cast

from gateway import envelope
from gateway.cli.errors import exit_with, from_os_error
from gateway.client.cores import block_bytes, chunk_threads, range_workers, spare_core
from gateway.client.files import OutputWriter, ReadAhead, atomic_output
from gateway.client.ranges import decrypt_file, encrypt_file
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.envelope import Decryptor, Encryptor, Identity, Recipient

# Progress bars only for inputs that take long enough to be worth watching.
_PROGRESS_MIN_SIZE = 8 * 1024 * 1024


class _Input(Protocol):
    """What the commands need of their input: a buffered binary file or stdin."""

    def read(self, size: int = -1, /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int | None: ...
    def fileno(self) -> int: ...
    def tell(self) -> int: ...


class _Output(Protocol):
    """Standard output, or a file being written atomically."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


def load_recipients(texts: tuple[str, ...], files: tuple[Path, ...]) -> list[Recipient]:
    """The recipients given by ``-r`` (``texts``) and in ``-R`` files, in that order."""
    recipients = [envelope.parse_recipient(text) for text in texts]
    for path in files:
        recipients += envelope.parse_recipients_file(
            path.read_text(encoding="utf-8", errors="replace"))
    return recipients


def load_identities(files: tuple[Path, ...]) -> list[Identity]:
    """The identities in the ``-i`` files."""
    identities: list[Identity] = []
    for path in files:
        # Undecodable bytes become U+FFFD, so a wrong file fails as "not an identity"
        # on its line rather than with a codec error.
        identities += envelope.parse_identities_file(
            path.read_text(encoding="utf-8", errors="replace"))
    return identities


def encrypt(recipients: list[Recipient], input_path: str | None, output: Path | None, *,
            armor: bool) -> None:
    """Encrypt ``input_path`` (standard input if None or ``-``) to ``output`` (standard
    output if None)."""
    if output is not None and not armor and _regular_file(input_path):
        _encrypt_in_ranges(Path(str(input_path)), output, recipients)
        return
    # A stream: with a core to spare, the input is read and the output written from
    # threads of their own (gateway.client.files); chunks are sealed in one between.
    background = output is not None and spare_core()
    threads = 1 if background else chunk_threads()
    with (
        _open_input(input_path) as source,
        _open_output(output, background=background) as sink,
        envelope.Encryptor(sink, recipients, armor=armor, threads=threads) as encryptor,
    ):
        if background:
            _seal_read_ahead(source, encryptor, block_bytes(threads),
                             progress=_progress_for(source, "encrypting"))
        else:
            _copy_blocks(source, encryptor, block_bytes(threads),
                         progress=_progress_for(source, "encrypting"))


def decrypt(identities: list[Identity], input_path: str | None, output: Path | None) -> None:
    """Decrypt the age file ``input_path`` (standard input if None or ``-``) to
    ``output`` (standard output if None)."""
    # As in encrypt: a writer thread when a core is free, which here costs no copy
    # (chunks are opened straight into the writer's slots).
    background = output is not None and spare_core()
    threads = 1 if background else chunk_threads()
    with (
        _open_input(input_path) as source,
        envelope.Decryptor(source, identities, threads=threads) as decryptor,
    ):
        if (output is not None and decryptor.payload_start is not None
                and _regular_file(input_path)):
            # A binary age file on disk: its chunks lie at fixed offsets.
            with (atomic_output(output, durable=False) as sink,
                  _progress_for(source, "decrypting") as update):
                decrypt_file(source.fileno(), sink.fd, decryptor,
                             workers=range_workers(), progress=update)
            return
        with _open_output(output, background=background) as sink:
            _copy_blocks(decryptor, sink, block_bytes(threads),
                         progress=_progress_for(source, "decrypting"))


# Each command's options that the quick reader takes, by every name click knows them by:
# the parameter each fills, and whether it may be given more than once.
_OPTIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "encrypt": {"-r": ("recipient_texts", True), "--recipient": ("recipient_texts", True),
                "-R": ("recipient_files", True), "--recipients-file": ("recipient_files", True),
                "-o": ("output", False), "--output": ("output", False)},
    "decrypt": {"-i": ("identity_files", True), "--identity": ("identity_files", True),
                "-o": ("output", False), "--output": ("output", False)},
}
# The options naming files that must exist (click.Path(exists=True, dir_okay=False)).
_EXISTING = frozenset({"recipient_files", "identity_files"})


class Conversion(NamedTuple):
    """A file-to-file ``encrypt`` or ``decrypt`` as click would have parsed it."""

    command: str
    # click's parameters of the command, by name, with the types click gives them.
    params: dict[str, object]


def read_quick(argv: list[str]) -> Conversion | None:
    """``argv`` (after the program's name) as a file-to-file conversion, or None unless
    it is one in a form read exactly as click would (see the module's docstring)."""
    if not argv or argv[0] not in _OPTIONS:
        return None
    names = _OPTIONS[argv[0]]
    split = _split(argv[1:], names)
    if split is None:
        return None
    values, inputs = split
    if (len(inputs) != 1 or "output" not in values or not _regular_file(inputs[0])
            or not _click_path(inputs[0], exists=False)
            or not _click_path(values["output"][0], exists=False)):
        return None
    params: dict[str, object] = {"output": Path(values["output"][0]), "input_path": inputs[0]}
    for key, repeatable in names.values():
        if repeatable:
            given = values.get(key, [])
            if key in _EXISTING and not all(_click_path(name, exists=True) for name in given):
                return None
            params[key] = tuple(map(Path, given)) if key in _EXISTING else tuple(given)
    if argv[0] == "encrypt":
        if not params["recipient_texts"] and not params["recipient_files"]:
            return None
        params["armor"] = False
    elif not params["identity_files"]:
        return None
    return Conversion(argv[0], params)


def _click_path(name: str, *, exists: bool) -> bool:
    """Whether ``click.Path(dir_okay=False, exists=exists)`` takes ``name``: a path that
    does not exist (unless ``exists``), or one that is not a directory and is readable."""
    try:
        mode = Path(name).stat().st_mode
    except OSError:
        return not exists
    return not stat.S_ISDIR(mode) and os.access(name, os.R_OK)


def _split(args: list[str], names: dict[str, tuple[str, bool]]
           ) -> tuple[dict[str, list[str]], list[str]] | None:
    """The option values (by parameter) and the other arguments of ``args``, or None if
    an argument is not in a form :func:`read_quick` takes."""
    values: dict[str, list[str]] = {}
    others: list[str] = []
    rest = iter(args)
    for token in rest:
        if not token.startswith("-"):
            others.append(token)
            continue
        name, equals, value = token.partition("=")
        if not equals:
            value = next(rest, "")
        elif not name.startswith("--"):
            return None  # click reads -o=x as the value "=x".
        if name not in names or not value or value.startswith("-"):
            return None
        key, repeatable = names[name]
        if key in values and not repeatable:
            return None
        values.setdefault(key, []).append(value)
    return values, others


def run_quick(argv: list[str]) -> None:
    """Run ``argv`` and end the process if :func:`read_quick` reads it; else return."""
    conversion = read_quick(argv)
    if conversion is None:
        return
    # As the program does for every command: what it writes is private by default.
    os.umask(0o077)
    params = conversion.params
    try:
        if conversion.command == "encrypt":
            encrypt(load_recipients(cast(tuple[str, ...], params["recipient_texts"]),
                                    cast(tuple[Path, ...], params["recipient_files"])),
                    cast(str, params["input_path"]), cast(Path, params["output"]),
                    armor=False)
        else:
            decrypt(load_identities(cast(tuple[Path, ...], params["identity_files"])),
                    cast(str, params["input_path"]), cast(Path, params["output"]))
    except GatewayError as exc:
        exit_with(exc)
    except OSError as exc:
        exit_with(from_os_error(exc))
    except (EOFError, KeyboardInterrupt):
        _aborted()
    from gateway.cli import exit_at_once

    exit_at_once()
    sys.exit(0)


def _aborted() -> NoReturn:
    """What click prints and exits with on Ctrl-C: a new line, then ``Aborted!``."""
    sys.stderr.write("\nAborted!\n")
    sys.exit(1)


def _regular_file(path: str | None) -> bool:
    """Whether ``path`` names a regular file (not standard input, a pipe or a device),
    whose chunks can be read at fixed offsets."""
    if path is None or path == "-":
        return False
    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except OSError:
        return False  # The streaming path opens it and reports why it cannot.


def _encrypt_in_ranges(input_path: Path, output: Path, recipients: list[Recipient]) -> None:
    """Encrypt one regular file into another, a range of chunks per core."""
    with (
        _open_input(str(input_path)) as source,
        atomic_output(output, durable=False) as sink,
        envelope.PayloadSealer(recipients) as sealer,
        _progress_for(source, "encrypting") as update,
    ):
        encrypt_file(source.fileno(), sink.fd, sealer, workers=range_workers(),
                     progress=update)


class _Writable(Protocol):
    def write(self, data: memoryview, /) -> object: ...


def _copy_blocks(
    source: _Input | Decryptor,
    sink: _Writable,
    block: int,
    *,
    progress: _Progress,
) -> None:
    """Copy ``source`` to ``sink`` in blocks of ``block`` bytes: through one reused
    buffer, or straight into the slots of an :class:`OutputWriter` that has them."""
    view = memoryview(bytearray(block))
    fill = sink.fill if isinstance(sink, OutputWriter) else functools.partial(_fill, sink.write)
    read = _reader(source)
    with progress as update:
        while fill(read, view):
            update()


def _seal_read_ahead(source: _Input, encryptor: Encryptor, block: int, *,
                     progress: _Progress) -> None:
    """Encrypt ``source`` as it is read ahead in a thread of its own."""
    ahead = ReadAhead(_reader(source), block=block)
    try:
        with progress as update:
            for view in ahead:
                encryptor.write(view)
                update()
    finally:
        ahead.close()


def _reader(source: _Input | Decryptor) -> Callable[[memoryview], int]:
    return lambda buffer: source.readinto(buffer) or 0


def _fill(write: Callable[[memoryview], object], read: Callable[[memoryview], int],
          buffer: memoryview) -> int:
    count = read(buffer)
    if count:
        write(buffer[:count])
    return count


@contextlib.contextmanager
def _open_input(path: str | None) -> Iterator[_Input]:
    if path is None or path == "-":
        # At run time this is an io.BufferedReader, which typeshed types as BinaryIO.
        yield cast(_Input, sys.stdin.buffer)
        return
    with Path(path).open("rb") as handle:
        with contextlib.suppress(OSError, AttributeError):
            # Read ahead further than the default: the input is read once, in order.
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        yield handle


@contextlib.contextmanager
def _open_output(path: Path | None, *, background: bool) -> Iterator[_Output]:
    """Standard output, or a 0600 temporary file renamed to ``path`` when complete
    (written from a thread of its own with ``background``)."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_output(path, durable=False, background=background) as sink:
        yield sink


class _Update(Protocol):
    def __call__(self, count: int | None = None, /) -> None: ...


def _no_bar(_count: int | None = None, /) -> None:
    pass


class _Progress:
    """A rich progress bar on stderr following the input's position, or nothing.

    Used as ``with progress as update:``, calling ``update()`` after each block, or
    ``update(count)`` from work that reads the input at offsets of its own.
    """

    def __init__(self, handle: _Input | None, total: int, description: str) -> None:
        self._handle = handle
        self._total = total
        self._description = description
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Update:
        handle = self._handle
        if handle is None:
            return _no_bar
        from rich.console import Console
        from rich.progress import Progress

        bar = self._stack.enter_context(Progress(console=Console(stderr=True), transient=True))
        task = bar.add_task(self._description, total=self._total)

        def update(count: int | None = None) -> None:
            bar.update(task, completed=handle.tell() if count is None else count)
        return update

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()


def _progress_for(source: _Input, description: str) -> _Progress:
    """A bar when stderr is a terminal and the input a large regular file."""
    if source is sys.stdin.buffer or not sys.stderr.isatty():
        return _Progress(None, 0, description)
    info = os.fstat(source.fileno())
    if not stat.S_ISREG(info.st_mode) or info.st_size < _PROGRESS_MIN_SIZE:
        return _Progress(None, 0, description)
    return _Progress(source, info.st_size, description)
