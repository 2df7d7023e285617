"""``blindpost user …``: accounts and their credentials."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.accounts import parse_role
from gateway.cli.admin import show_new_account_secrets
from gateway.cli.common import (
    data_dir_option,
    emit_json,
    emit_table,
    json_option,
    open_app,
    operator,
)
from gateway.errors import UsageError
from gateway.sshkeys import PublicKey, parse_public_key


def read_key_file(path: Path) -> list[PublicKey]:
    """Every key in an ``authorized_keys``-style file (comments and blank lines skipped)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read SSH public key file") from exc
    keys = [parse_public_key(line) for line in lines if line.strip() and
            not line.lstrip().startswith("#")]
    if not keys:
        raise UsageError(f"{path}: no SSH public key in the file")
    return keys


@click.group()
def user() -> None:
    """Manage accounts: admins, auditors, staff and partner users."""


@user.command("add")
@click.argument("username")
@click.option("--role", required=True, metavar="ROLE",
              help="admin | auditor | staff | partner")
@click.option("--partner", metavar="SLUG", help="The partner of a partner user.")
@click.option("--ssh-key", "ssh_keys", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="SSH public key file (repeatable).")
@json_option
@data_dir_option
def user_add(username: str, role: str, partner: str | None, ssh_keys: tuple[Path, ...],
             as_json: bool, data_dir: Path | None) -> None:
    """Create an account and print its TOTP enrolment (and one-time password if any).

    SFTP users (staff, partner) sign in with an SSH key and a TOTP code; console users
    (admin, auditor) with a password and a TOTP code.

    \b
    Example:
      blindpost user add dr-lee --role partner --partner uni-research --ssh-key lee.pub
    """
    parsed_role = parse_role(role)
    keys = [key for path in ssh_keys for key in read_key_file(path)]
    new = open_app(data_dir).accounts.add(operator(), username=username, role=parsed_role,
                                          partner=partner, ssh_keys=keys)
    if not as_json:
        click.echo(f"created {parsed_role.value} account {username}")
    show_new_account_secrets(new, as_json=as_json)


@user.command("list")
@json_option
@data_dir_option
def user_list(as_json: bool, data_dir: Path | None) -> None:
    """List accounts.

    \b
    Example:
      blindpost user list --json
    """
    rows = open_app(data_dir).accounts.all(operator())
    if as_json:
        emit_json(rows)
        return
    emit_table(["username", "role", "partner", "ssh keys", "state"],
               [[a.username, a.role.value, a.partner, len(a.ssh_keys),
                 "disabled" if a.disabled else "active"] for a in rows])


@user.command("disable")
@click.argument("username")
@data_dir_option
def user_disable(username: str, data_dir: Path | None) -> None:
    """Disable an account: it can no longer sign in, and its open SFTP sessions end
    within seconds on every worker and node.

    \b
    Example:
      blindpost user disable dr-lee
    """
    open_app(data_dir).accounts.disable(operator(), username=username)
    click.echo(f"disabled account {username}")


@user.command("add-key")
@click.argument("username")
@click.argument("key_file", type=click.Path(path_type=Path, dir_okay=False))
@data_dir_option
def user_add_key(username: str, key_file: Path, data_dir: Path | None) -> None:
    """Add the SSH public keys in KEY_FILE to an account.

    \b
    Example:
      blindpost user add-key dr-lee ~/.ssh/id_ed25519.pub
    """
    app = open_app(data_dir)
    for key in read_key_file(key_file):
        app.accounts.add_key(operator(), username=username, key=key)
        click.echo(f"added {key.key_type} {key.fingerprint} to {username}")


@user.command("reset-totp")
@click.argument("username")
@json_option
@data_dir_option
def user_reset_totp(username: str, as_json: bool, data_dir: Path | None) -> None:
    """Replace an account's TOTP secret and print the new enrolment.

    \b
    Example:
      blindpost user reset-totp dr-lee
    """
    uri = open_app(data_dir).accounts.reset_totp(operator(), username=username)
    if as_json:
        emit_json({"username": username, "totp_uri": uri})
    else:
        click.echo(f"TOTP provisioning URI: {uri}")
