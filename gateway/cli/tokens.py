"""``blindpost token …``: API tokens for automation against the console's /api/v1."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from gateway.accounts import parse_role
from gateway.authority import AuthorityChangeInfo
from gateway.cli.common import (
    data_dir_option,
    emit_json,
    emit_table,
    json_option,
    open_app,
    operator,
    when,
)
from gateway.cli.users import acting, proposer_option, show_proposal
from gateway.durations import duration_option
from gateway.values import jsonable


@click.group()
def token() -> None:
    """API tokens for /api/v1: create (shown once), list, revoke.

    A token acts with its role's rights, except that it never proposes, approves or
    revokes a recipient key and never creates or extends authority: those take a
    person's second factor. An admin token is proposed --by an admin and created when a
    second admin approves it (`user approve-change`), who is shown its secret.
    """


@token.command("create")
@click.argument("name")
@click.option("--role", required=True, metavar="ROLE", help="admin | auditor")
@click.option("--expires", metavar="DURATION",
              help="Lifetime, e.g. 30d, 2w or 12h (default: until revoked).")
@proposer_option
@json_option
@data_dir_option
def token_create(name: str, role: str, expires: str | None, by: str | None, as_json: bool,
                 data_dir: Path | None) -> None:
    """Create API token NAME and print it once (it is stored only as a hash).

    An admin token is proposed --by an admin; a second admin approves it with
    `blindpost user approve-change` and is shown the token.

    \b
    Example:
      blindpost token create nightly-report --role auditor --expires 30d --json
      blindpost token create deploy --role admin --by alice
    """
    seconds = duration_option(expires, what="lifetime")
    lifetime = timedelta(seconds=seconds) if seconds else None
    app = open_app(data_dir)
    new = app.tokens.create(acting(app, by, purpose="token propose"), name=name,
                            role=parse_role(role), lifetime=lifetime)
    if isinstance(new, AuthorityChangeInfo):
        show_proposal(new, as_json=as_json)
        return
    if as_json:
        info = jsonable(new.info)
        assert isinstance(info, dict)
        emit_json({**info, "token": new.token})
        return
    click.echo(f"created {new.info.role.value} token {new.info.name} "
               f"(expires {when(new.info.expires_at)})")
    click.echo(f"Token (shown once): {new.token}")
    click.echo("Send it as 'Authorization: Bearer <token>'.")


@token.command("list")
@json_option
@data_dir_option
def token_list(as_json: bool, data_dir: Path | None) -> None:
    """List API tokens with their last use (never their secrets).

    \b
    Example:
      blindpost token list --json
    """
    rows = open_app(data_dir).tokens.all(operator())
    if as_json:
        emit_json(rows)
        return
    emit_table(["name", "role", "state", "expires", "last used", "created by"],
               [[t.name, t.role.value, t.state, when(t.expires_at), when(t.last_used_at),
                 t.created_by] for t in rows])


@token.command("revoke")
@click.argument("name")
@data_dir_option
def token_revoke(name: str, data_dir: Path | None) -> None:
    """Revoke API token NAME now.

    \b
    Example:
      blindpost token revoke nightly-report
    """
    open_app(data_dir).tokens.revoke(operator(), name=name)
    click.echo(f"revoked token {name}")
