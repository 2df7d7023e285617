"""``blindpost exposure``: what was on the server in a window, to whom, fetched by whom."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import click

from gateway.cli.audit import checkpoint_option, read_checkpoints
from gateway.cli.common import data_dir_option, open_app, operator
from gateway.cli.errors import fail
from gateway.exposure import (
    ExposureReport,
    parse_moment,
    render_csv,
    render_json,
    render_text,
)

RENDERERS: dict[str, Callable[[ExposureReport], Iterator[str]]] = {
    "text": render_text, "json": render_json, "csv": render_csv}


@click.command()
@click.option("--from", "start", required=True, metavar="TIME",
              help="Start of the window: ISO 8601 with an offset, or a date (its first "
                   "instant, UTC).")
@click.option("--to", "end", required=True, metavar="TIME",
              help="End of the window, included: ISO 8601 with an offset, or a date (up to "
                   "its last instant, UTC).")
@click.option("--partner", metavar="SLUG", help="Only this partner's files, accounts and "
              "keys (and the staff accounts, who upload to every partner).")
@click.option("--format", "style", type=click.Choice(sorted(RENDERERS)), default="text",
              show_default=True, help="text for people; json or csv for tooling.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this new file (mode 0600) instead of standard output.")
@checkpoint_option
@click.option("--unverified", is_flag=True,
              help="Report even if the audit log fails verification; every page and "
                   "document then carries a warning.")
@data_dir_option
def exposure(start: str, end: str, partner: str | None, style: str, output: Path | None,
             checkpoint_files: tuple[Path, ...], unverified: bool,
             data_dir: Path | None) -> None:
    """Report every file on the server at any moment of a window, from the audit log.

    For each file: partner, name, size, ciphertext SHA-256, uploader and time, every
    recipient key it was encrypted to, every download, and when and why it was
    removed. Then the accounts that could sign in and the keys approved in the window.
    The log is verified first (with any witness checkpoints); a log that fails gives
    no report unless --unverified.

    \b
    Examples:
      blindpost exposure --from 2026-11-01 --to 2026-11-07
      blindpost exposure --from 2026-11-02T09:00+01:00 --to 2026-11-02T17:00+01:00 \\
          --partner uni-research --format csv -o exposure.csv --checkpoint witness.txt
    """
    window = (parse_moment(start, option="--from"),
              parse_moment(end, option="--to", end_of_day=True))
    outside = read_checkpoints(checkpoint_files)
    app = open_app(data_dir)
    report = app.exposure.report(operator(), start=window[0], end=window[1], partner=partner,
                                 checkpoints=outside, unverified=unverified)
    if report.warning is not None:
        click.echo(report.warning, err=True)
    chunks = RENDERERS[style](report)
    if output is None:
        for chunk in chunks:
            click.echo(chunk, nl=False)
        return
    with _create(output) as handle:
        handle.writelines(chunks)
    click.echo(f"wrote the report ({len(report.files)} files) to {output}", err=True)


def _create(output: Path) -> TextIO:
    try:
        # The report names accounts, files and partners: keep it as private as the log.
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(f"{output}: cannot create the report ({exc.strerror})")
    return os.fdopen(descriptor, "w", encoding="utf-8", newline="")
