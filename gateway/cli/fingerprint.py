"""``blindpost key fingerprint``: a key's fingerprint, anywhere (client installs too).

Apart from the other client commands (:mod:`gateway.cli.crypto`): the ``key`` group
registers it, and ``key list`` and the other admin subcommands should not load the
file encryption and transfer code those need to start.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.errors import fail, reported_errors
from gateway.envelope import (
    Recipient,
    parse_identities_file,
    parse_recipient,
    parse_recipients_file,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("key_or_file", metavar="FILE|RECIPIENT")
def key_fingerprint(key_or_file: str) -> None:
    """Print the fingerprint of a key, in the form `key propose` shows it to admins.

    FILE is an identity file (from `blindpost keygen` or `age-keygen`) or a file of
    recipients, one a line; RECIPIENT is an age1pq1… or age1… string. When a key is
    checked by phone, compare this short fingerprint, not the recipient.

    \b
    Examples:
      blindpost key fingerprint partner.key
      blindpost key fingerprint age1pq1…
    """
    with reported_errors():
        for recipient in _recipients_of(key_or_file):
            click.echo(f"{recipient.kind} {recipient.fingerprint}")


def _recipients_of(key_or_file: str) -> list[Recipient]:
    if key_or_file.startswith("age1"):
        return [parse_recipient(key_or_file)]
    path = Path(key_or_file)
    if not path.is_file():
        fail(f"{key_or_file}: neither a recipient (age1…) nor a file", code=2)
    text = path.read_text(encoding="utf-8", errors="replace")
    if "AGE-SECRET-KEY-" in text:
        return [identity.recipient for identity in parse_identities_file(text)]
    return parse_recipients_file(text)
