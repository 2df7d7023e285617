"""``blindpost keygen | encrypt | decrypt | key fingerprint``: age keys and files.

These commands need no data directory: they are what a partner runs to read what it
downloaded, and what staff run to encrypt before uploading. Files are age v1, so other
age implementations read and write the same files, within what each supports: files
for the default hybrid post-quantum keys (``age1pq1…``) need ``blindpost`` or age 1.3
or later (Debian 12's age 1.1.1 refuses them); classical keys (``keygen --classic``,
``age1…``) work with every age release.

Here are the commands' options and help; what ``encrypt`` and ``decrypt`` do is in
:mod:`gateway.cli.conversions`, which also runs their file-to-file form without click.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway import envelope
from gateway.cli import conversions
from gateway.cli.errors import fail, reported_errors

if TYPE_CHECKING:
    from gateway.envelope import Identity

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
    if a power cut right after must not lose it). From a file to -o (binary), a process
    per core (this one and helpers forked from it) encrypts the file's chunks, a batch
    at a time.

    \b
    Examples:
      blindpost encrypt -r age1pq1… -o extract.csv.age extract.csv
      blindpost encrypt -R partner.recipients -a < notes.txt > notes.txt.age
    """
    if not recipient_texts and not recipient_files:
        raise click.UsageError("at least one -r RECIPIENT or -R FILE is required")
    with reported_errors():
        recipients = conversions.load_recipients(recipient_texts, recipient_files)
        if output is None and not armor and sys.stdout.isatty():
            raise click.UsageError(
                "refusing to write binary ciphertext to a terminal; use -a or -o"
            )
        conversions.encrypt(recipients, input_path, output, armor=armor)


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
    file as delivered, does flush it first. From a binary age file to -o, a process per
    core (this one and helpers forked from it) decrypts the file's chunks, a batch at a
    time.

    \b
    Examples:
      blindpost decrypt -i partner.key -o extract.csv extract.csv.age
      blindpost decrypt -i partner.key < notes.txt.age
    """
    with reported_errors():
        conversions.decrypt(conversions.load_identities(identity_files), input_path, output)
