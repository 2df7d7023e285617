"""What a new or reset account is shown once: its one-time password and TOTP enrolment."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from gateway.account_values import NewAccount
from gateway.cli.common import emit_json, when


def show_new_account_secrets(new: NewAccount, *, as_json: bool = False) -> None:
    """Print the one-time password and TOTP enrolment of a new account, once."""
    info = new.account
    if as_json:
        emit_json({"username": info.username, "role": info.role,
                   "one_time_password": new.one_time_password, "totp_uri": new.totp_uri,
                   "enrol_until": info.enrol_until, "machine_grant": new.machine_grant})
        return
    if new.one_time_password:
        click.echo(f"One-time password for {info.username}: {new.one_time_password}")
    if new.machine_grant is not None:
        click.echo(f"Machine account proposed (grant {new.machine_grant}): it signs in with its "
                   "key alone once a second admin runs "
                   f"`blindpost user approve {new.machine_grant} --by NAME`.")
    elif new.totp_uri is None:
        show_enrolment_window(info.username, info.enrol_until)
    else:
        show_totp_uri(new.totp_uri)


def show_totp_uri(uri: str) -> None:
    """Print a TOTP enrolment for its holder to scan now (shown once)."""
    click.echo(f"TOTP provisioning URI: {uri}")
    if sys.stdout.isatty():
        # Imported here: segno (with the XML and URL libraries its writers use) is needed
        # only to draw the code, never by the commands that list or change accounts.
        import segno

        click.echo("Scan with an authenticator app:")
        segno.make(uri, error="m").terminal(compact=True)
    click.echo("Shown once: add it to the holder's authenticator app now. It is the account's "
               "one second factor: the first console sign-in (with the one-time password) "
               "asks for a code from it and a new password, and so does `--by`.")


def show_enrolment_window(username: str, until: datetime | None) -> None:
    """Say how the holder enrols over SSH (no secret is shown here)."""
    click.echo(f"{username} enrols their one-time codes at their first SFTP sign-in with "
               f"their SSH key, until {when(until)}: the sign-in shows the secret and a QR "
               "code, and completes with a valid code.")
