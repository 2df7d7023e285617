"""``blindpost audit …``: verify, checkpoint, prove, read and export the audit log."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import click

from gateway.audit import (
    AuditTag,
    NoteVerifier,
    VerifyReport,
    load_signer,
    verify_export,
)
from gateway.audit.cosignature import (
    Cosignature,
    CosignatureVerifier,
    require_quorum_on_largest,
)
from gateway.cli.common import data_dir_option, open_app, operator, settings_for
from gateway.cli.errors import fail

witness_option = click.option(
    "--witness", "witness_keys", multiple=True, metavar="VKEY",
    help="A witness's verifier key (from `blindpost witness keygen`); the latest checkpoint "
         "must carry a quorum of their cosignatures. Repeat for several.")
quorum_option = click.option(
    "--quorum", type=click.IntRange(min=1), default=None,
    help="How many of the --witness keys must have cosigned (default: all of them).")

checkpoint_option = click.option(
    "--checkpoint", "checkpoint_files", multiple=True, metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A signed checkpoint held by a witness; repeat for several.")


@click.group()
def audit() -> None:
    """Tamper-evident audit log: verify, checkpoint, prove, read, export.

    \b
    With audit_witnesses set, witnesses cosign every checkpoint and
    `blindpost audit verify --witness VKEY` requires their cosignatures;
    otherwise hand `blindpost audit checkpoint` output to someone regularly, and
    `blindpost audit verify --checkpoint FILE` later proves that the history it
    covers was not rewritten.
    """


@audit.command("key")
@data_dir_option
def audit_key(data_dir: Path | None) -> None:
    """Print the checkpoint verifier key (name+keyhash+base64) for witnesses.

    \b
    Example:
      blindpost audit key > audit-verifier-key.txt
    """
    settings = settings_for(data_dir)
    signer = load_signer(settings.audit_key_path, name=settings.audit_origin)
    click.echo(signer.verifier.key_string())


def read_checkpoints(files: tuple[Path, ...]) -> list[tuple[str, str]]:
    """The ``(label, note)`` pairs of ``--checkpoint`` files."""
    try:
        return [(str(path), path.read_text(encoding="utf-8")) for path in files]
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read a checkpoint file: {exc}")


def _report(compute: Callable[[], VerifyReport]) -> None:
    """Run a verification and print its summary (a failure lists every finding, exit 1)."""
    report = compute()
    click.echo(report.summary())
    click.echo(f"root of the {report.size} entries: {report.root.hex()}")


def _export_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def _witnesses(keys: tuple[str, ...], quorum: int | None) -> tuple[
        list[CosignatureVerifier], int]:
    verifiers = [CosignatureVerifier.from_key_string(key) for key in keys]
    chosen = len(verifiers) if quorum is None else quorum
    if quorum is not None and not verifiers:
        fail("--quorum needs --witness keys", code=2)
    if chosen > len(verifiers):
        fail(f"--quorum {chosen} is more than the {len(verifiers)} --witness keys given", code=2)
    return verifiers, chosen


@audit.command("verify")
@checkpoint_option
@witness_option
@quorum_option
@click.option("--export", "export_file", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verify this export offline instead of the database (needs --key).")
@click.option("--key", "verifier_key", metavar="VERIFIER_KEY",
              help="The log's verifier key, from `blindpost audit key` "
                   "(default: the key in the data directory).")
@click.option("--full", is_flag=True,
              help="Verify the whole log again, not only what was appended since the last "
                   "verification.")
@data_dir_option
def audit_verify(checkpoint_files: tuple[Path, ...], witness_keys: tuple[str, ...],
                 quorum: int | None, export_file: Path | None, verifier_key: str | None,
                 full: bool, data_dir: Path | None) -> None:
    """Recompute the tree and check every checkpoint; exit 1 on any finding.

    The log is verified from where the last successful verification ended (kept in
    the data directory as audit-verified.json), so a daily run costs what was
    appended since; --full (or --key) verifies the whole log. The database is
    compared with the whole log every time.

    With --witness, the latest checkpoint (of the database, or the largest --checkpoint
    for an export) must carry a quorum of valid cosignatures from those witnesses, and
    the log must be consistent with every checkpoint they cosigned.

    \b
    Examples:
      blindpost audit verify --checkpoint witness-2026-11-01.txt
      blindpost audit verify --full
      blindpost audit verify --witness 'witness.partner.example/w1+…' --quorum 1
      blindpost audit verify --export audit.jsonl \\
          --key 'registry.example/blindpost+1a2b3c4d+AR…' --checkpoint cp.txt \\
          --witness 'witness.partner.example/w1+…'
    """
    outside = read_checkpoints(checkpoint_files)
    witnesses, needed = _witnesses(witness_keys, quorum)
    if export_file is not None:
        if verifier_key is None:
            fail("--export needs --key VERIFIER_KEY: an export is checked without the "
                 "data directory, so the key must come from somewhere you trust")
        verifier = NoteVerifier.from_key_string(verifier_key)
        _report(lambda: verify_export(_export_lines(export_file), verifier=verifier,
                                      outside=outside))
        if witnesses:
            found = require_quorum_on_largest(outside, witnesses, needed)
            _report_quorum(found, needed)
        return
    app = open_app(data_dir)
    chosen = NoteVerifier.from_key_string(verifier_key) if verifier_key else None
    _report(lambda: app.audit_view.verify(operator(), outside=outside, verifier=chosen,
                                          witnesses=witnesses, quorum=needed,
                                          incremental=not full))
    if witnesses:
        click.echo(f"witness quorum met: the latest checkpoint carries at least {needed} "
                   "valid cosignature(s) from the given witnesses")


def _report_quorum(found: list[Cosignature], needed: int) -> None:
    names = ", ".join(cosignature.witness for cosignature in found)
    click.echo(f"witness quorum met ({needed} required): cosigned by {names}")


@audit.command("checkpoint")
@data_dir_option
def audit_checkpoint(data_dir: Path | None) -> None:
    """Print a signed checkpoint of the whole log with its witnesses' cosignatures.

    A new checkpoint is signed first if entries were added since the last one, and the
    configured witnesses (audit_witnesses) are asked to cosign it.

    \b
    Example:
      blindpost audit checkpoint > checkpoint-$(date +%F).txt
    """
    click.echo(open_app(data_dir).audit_view.cosigned_checkpoint(operator()), nl=False)


@audit.command("prove")
@click.argument("index", type=click.IntRange(min=0))
@data_dir_option
def audit_prove(index: int, data_dir: Path | None) -> None:
    """Print a self-contained tlog-proof (c2sp.org/tlog-proof) that entry INDEX is logged.

    The entry travels in the proof's extra line, and the checkpoint carries the
    witnesses' cosignatures; the proof verifies offline with the log's verifier key (and
    the witnesses' keys, to check their cosignatures).

    \b
    Example:
      blindpost audit prove 1234 > entry-1234.tlog-proof
    """
    click.echo(open_app(data_dir).audit_view.prove(operator(), index), nl=False)


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since: expected an ISO 8601 time such as 2026-11-01T08:00Z, got {value!r}",
             code=2)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit.command("log")
@click.option("--since", metavar="TIME", help="Only entries at or after TIME (ISO 8601, UTC "
              "unless it says otherwise).")
@click.option("--tag", type=click.Choice([tag.value for tag in AuditTag]),
              help="Only entries with this tag.")
@click.option("--partner", metavar="SLUG", help="Only entries about this partner (its files, "
              "keys, accounts and settings).")
@click.option("--user", metavar="NAME", help="Only entries by or about this account.")
@click.option("--file", "file", metavar="ID|NAME", help="Only entries about this file (its "
              "id, or its stored name such as extract.csv.age).")
@click.option("--json", "as_json", is_flag=True, help="Print each entry's JSON leaf, one a line.")
@data_dir_option
def audit_log(since: str | None, tag: str | None, partner: str | None, user: str | None,
              file: str | None, as_json: bool, data_dir: Path | None) -> None:
    """Read the log, oldest entry first.

    \b
    Examples:
      blindpost audit log --since 2026-11-01 --tag key:approve
      blindpost audit log --partner uni-research --user dr-lee
      blindpost audit log --json | jq .details
    """
    # Imported here: `audit verify --export` runs on client-only installs, without the
    # database layer the other audit commands need.
    from gateway.audit_service import EventFilter

    selection = EventFilter(tag=AuditTag(tag) if tag else None, since=_parse_since(since),
                            partner=partner, user=user, file=file)
    for event in open_app(data_dir).audit_view.events(operator(), selection):
        click.echo(event.leaf.decode() if as_json else event.text_line())


def _open_output(output: Path | None) -> BinaryIO:
    if output is None:
        return sys.stdout.buffer
    try:
        # The export lists who did what and when: keep it as private as the database.
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(f"{output}: cannot create the export ({exc.strerror})")
    return os.fdopen(descriptor, "wb")


@audit.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this new file (mode 0600) instead of standard output.")
@data_dir_option
def audit_export(output: Path | None, data_dir: Path | None) -> None:
    """Write every entry as JSON lines, for `blindpost audit verify --export` elsewhere.

    \b
    Example:
      blindpost audit export -o audit-export.jsonl
    """
    app = open_app(data_dir)
    handle = _open_output(output)
    try:
        count = app.audit_view.export(operator(), handle)
    finally:
        handle.flush()
        if output is not None:
            handle.close()
    if output is not None:
        click.echo(f"exported {count} entries to {output}", err=True)
