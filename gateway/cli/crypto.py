"""``blindpost keygen | encrypt | decrypt | key fingerprint``: age keys and files.

These commands need no data directory: they are what a partner runs to read what it
downloaded, and what staff run to encrypt before uploading. Files are age v1, so other
age implementations read and write the same files, within what each supports: files
for the default hybrid post-quantum keys (``age1pq1…``) need ``blindpost`` or age 1.3
or later (Debian 12's age 1.1.1 refuses them); classical keys (``keygen --classic``,
``age1…``) work with every age release.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import click

from gateway import envelope
from gateway.cli.errors import fail, reported_errors
from gateway.client.cores import block_bytes, chunk_threads, range_threads, spare_core
from gateway.client.files import OutputWriter, ReadAhead, atomic_output
from gateway.client.ranges import decrypt_file, encrypt_file

if TYPE_CHECKING:
    from gateway.envelope import Decryptor, Encryptor, Identity, Recipient

# Progress bars only for inputs that take long enough to be worth watching.
_PROGRESS_MIN_SIZE = 8 * 1024 * 1024

_path = click.Path(dir_okay=False, path_type=Path)
_input_argument = click.argument(
    "input_path", metavar="[INPUT]", required=False, type=click.Path(dir_okay=False)
)
_output_option = click.option(
    "-o",
    "--output",
    type=_path,
    help="Write here instead of standard output. The output is written to a private "
    "(0600) temporary file next to it and renamed into place on success, so a failed run "
    "leaves no partial file; it is not flushed to the disk (no fsync), as with age -o "
    "and cp.",
)


class _Input(Protocol):
    """What the commands need of their input: a buffered binary file or stdin."""

    def read(self, size: int = -1, /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int | None: ...
    def fileno(self) -> int: ...
    def tell(self) -> int: ...


class _Output(Protocol):
    """Standard output, or a file being written atomically."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--classic",
    is_flag=True,
    help="Generate a classical X25519 key (age1…) instead of a post-quantum one.",
)
@click.option("-o", "--output", type=_path, help="Write the identity to this new file (mode 0600).")
def keygen(classic: bool, output: Path | None) -> None:
    """Generate an identity (private key); show its recipient (public key) and fingerprint.

    The default is a hybrid post-quantum key (ML-KEM-768 + X25519, ``age1pq1…``);
    health data stays sensitive for a lifetime. Files for it open with `blindpost
    decrypt` or age 1.3 and later; older age releases (Debian 12 ships 1.1.1) refuse
    them. A --classic key (X25519, ``age1…``) works with every age release. The file
    has the format of ``age-keygen`` output. An existing file is never overwritten.

    Send the recipient to the registry and read the fingerprint to them by phone:
    it is what an admin sees when proposing your key (`blindpost key fingerprint`
    prints it again).

    \b
    Examples:
      blindpost keygen -o partner.key
      blindpost keygen --classic > classic.key
    """
    with reported_errors():
        identity = envelope.generate_identity(post_quantum=not classic)
        text = _identity_file_text(identity)
        if output is None:
            click.echo(text, nl=False)
        else:
            _write_new_private_file(output, text)
        click.echo(f"Public key: {identity.recipient}", err=True)
        click.echo(f"Fingerprint: {identity.recipient.kind} {identity.recipient.fingerprint}",
                   err=True)


def _identity_file_text(identity: Identity) -> str:
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return (
        f"# created: {created}\n# public key: {identity.recipient}\n{identity.to_secret_string()}\n"
    )


def _write_new_private_file(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{path} already exists; refusing to overwrite a key file")
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-r",
    "--recipient",
    "recipient_texts",
    multiple=True,
    metavar="RECIPIENT",
    help="Encrypt to this age1pq1… or age1… recipient. Repeatable.",
)
@click.option(
    "-R",
    "--recipients-file",
    "recipient_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Encrypt to every recipient in this file (one a line, # comments). Repeatable.",
)
@click.option("-a", "--armor", is_flag=True, help="Write PEM-style ASCII armor.")
@_output_option
@_input_argument
def encrypt(
    recipient_texts: tuple[str, ...],
    recipient_files: tuple[Path, ...],
    armor: bool,
    output: Path | None,
    input_path: str | None,
) -> None:
    """Encrypt INPUT (default: standard input) to age recipients.

    Post-quantum and classical recipients cannot be mixed in one file: the
    classical one would undo the post-quantum protection. With -o, the ciphertext
    appears under its name only once it is complete; like age and cp, the command
    leaves flushing it to the disk to the operating system, without fsync (run `sync`
    if a power cut right after must not lose it). From a file to -o (binary), a thread
    per core encrypts the file's chunks, a batch at a time.

    \b
    Examples:
      blindpost encrypt -r age1pq1… -o extract.csv.age extract.csv
      blindpost encrypt -R partner.recipients -a < notes.txt > notes.txt.age
    """
    if not recipient_texts and not recipient_files:
        raise click.UsageError("at least one -r RECIPIENT or -R FILE is required")
    with reported_errors():
        recipients = _load_recipients(recipient_texts, recipient_files)
        if output is None and not armor and sys.stdout.isatty():
            raise click.UsageError(
                "refusing to write binary ciphertext to a terminal; use -a or -o"
            )
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


def _load_recipients(texts: tuple[str, ...], files: tuple[Path, ...]) -> list[Recipient]:
    recipients = [envelope.parse_recipient(text) for text in texts]
    for path in files:
        recipients += envelope.parse_recipients_file(
            path.read_text(encoding="utf-8", errors="replace"))
    return recipients


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-i",
    "--identity",
    "identity_files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An identity file, as written by `blindpost keygen` or `age-keygen`. Repeatable.",
)
@_output_option
@_input_argument
def decrypt(identity_files: tuple[Path, ...], output: Path | None, input_path: str | None) -> None:
    """Decrypt the age file INPUT (default: standard input), binary or armored.

    With -o, the plaintext goes to a private temporary file next to the output,
    renamed into place only when the whole file has been verified; a damaged or
    truncated file leaves no output behind. Like age and cp, the command leaves
    flushing the file to the disk to the operating system, without fsync (run `sync`
    if a power cut right after must not lose it); `blindpost fetch`, which records a
    file as delivered, does flush it first. From a binary age file to -o, a thread per
    core decrypts the file's chunks, a batch at a time.

    \b
    Examples:
      blindpost decrypt -i partner.key -o extract.csv extract.csv.age
      blindpost decrypt -i partner.key < notes.txt.age
    """
    with reported_errors():
        identities: list[Identity] = []
        for path in identity_files:
            # Undecodable bytes become U+FFFD, so a wrong file fails as "not an
            # identity" on its line rather than with a codec error.
            identities += envelope.parse_identities_file(
                path.read_text(encoding="utf-8", errors="replace"))
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
                                 threads=range_threads(), progress=update)
                return
            with _open_output(output, background=background) as sink:
                _copy_blocks(decryptor, sink, block_bytes(threads),
                             progress=_progress_for(source, "decrypting"))


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
        encrypt_file(source.fileno(), sink.fd, sealer, threads=range_threads(),
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
