"""``blindpost user …``: accounts, their credentials, lockouts and machine grants."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.account_values import NewAccount
from gateway.accounts import PASSWORD_ROLES, parse_allow_from, parse_role
from gateway.authority import AppliedChange, AuthorityChangeInfo, ChangeKind
from gateway.cli.common import (
    confirm,
    data_dir_option,
    emit_json,
    emit_table,
    json_option,
    open_app,
    operator,
    prove,
    when,
    yes_option,
)
from gateway.cli.enrolment import (
    show_enrolment_window,
    show_new_account_secrets,
    show_totp_uri,
)
from gateway.errors import UsageError
from gateway.sshkeys import PublicKey, parse_public_key

if TYPE_CHECKING:
    from gateway.actors import Actor
    from gateway.app import App

allow_shared_option = click.option(
    "--allow-shared-key", "allow_shared", is_flag=True,
    help="Accept a key that another account already has (whoever holds it can sign in as "
         "each of them; audited).")


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


proposer_option = click.option(
    "--by", metavar="ADMIN",
    help="The admin proposing a change to an admin or auditor account (their one-time code "
         "is asked for); a second admin approves it with `user approve-change`.")


def acting(app: App, by: str | None, *, purpose: str) -> Actor:
    """The named admin once proven, or else the local operator."""
    return prove(app, by, purpose=purpose) if by else operator()


def show_proposal(change: AuthorityChangeInfo, *, as_json: bool = False) -> None:
    """Say that a change waits for a second admin, and how they approve it."""
    if as_json:
        emit_json({"pending": change})
        return
    click.echo(f"proposed (change {change.id}): {change.summary}; it grants nothing until a "
               f"second admin runs `blindpost user approve-change {change.id} --by NAME`")


@click.group()
def user() -> None:
    """Manage accounts: admins, auditors, staff and partner users.

    Creating an admin or auditor, resetting their credentials, adding their SSH keys,
    enabling them, and admin API tokens take two admins: one proposes (--by), a second
    approves (`user approve-change`).
    """


@user.command("add")
@click.argument("username")
@click.option("--role", required=True, metavar="ROLE",
              help="admin | auditor | staff | partner")
@click.option("--partner", metavar="SLUG", help="The partner of a partner user.")
@click.option("--ssh-key", "ssh_keys", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="SSH public key file (repeatable).")
@click.option("--enrol-by-ssh", is_flag=True,
              help="Do not show the TOTP secret: the holder enrols it at their first SFTP "
                   "sign-in with their key (within enrolment_hours, 72 by default).")
@click.option("--allow-from", metavar="CIDR[,CIDR…]",
              help="Only allow sign-in from these networks.")
@click.option("--machine", is_flag=True,
              help="A staff account for scheduled jobs: key alone, only from --allow-from; "
                   "proposed by --by and usable once a second admin approves it.")
@click.option("--by", metavar="ADMIN",
              help="The admin proposing a machine, admin or auditor account (their one-time "
                   "code is asked for); a second admin approves it.")
@allow_shared_option
@json_option
@data_dir_option
def user_add(username: str, role: str, partner: str | None, ssh_keys: tuple[Path, ...],
             enrol_by_ssh: bool, allow_from: str | None, machine: bool, by: str | None,
             allow_shared: bool, as_json: bool, data_dir: Path | None) -> None:
    """Create an account and print its TOTP enrolment (and one-time password if any).

    SFTP users (staff, partner) sign in with an SSH key and a TOTP code; console users
    (admin, auditor) with a password and a TOTP code; machine accounts with their key
    alone, from their networks only.

    An admin or auditor account is proposed --by an admin and created when a second
    admin approves it (`user approve-change`); the approver is shown its one-time
    password, and the new holder enrols their code at their first console sign-in.
    Only while there are fewer than two active admins does the local operator create
    one directly (the bootstrap).

    \b
    Examples:
      blindpost user add dr-lee --role partner --partner uni-research --ssh-key lee.pub \\
          --enrol-by-ssh
      blindpost user add nightly --role staff --machine --allow-from 10.20.0.0/24 \\
          --ssh-key job.pub --by alice
      blindpost user add carol --role admin --by alice
    """
    parsed_role = parse_role(role)
    networks = parse_allow_from(allow_from) if allow_from is not None else None
    if machine and by is None:
        raise UsageError("--machine needs --by ADMIN (a machine account is proposed by one "
                         "admin and approved by another)")
    if by is not None and not machine and parsed_role not in PASSWORD_ROLES:
        raise UsageError("--by is for machine, admin and auditor accounts, which a second "
                         "admin approves")
    keys = [key for path in ssh_keys for key in read_key_file(path)]
    app = open_app(data_dir)
    actor = acting(app, by, purpose="machine account propose" if machine
                   else "account propose")
    new = app.accounts.add(actor, username=username, role=parsed_role, partner=partner,
                           ssh_keys=keys, enrol_by_ssh=enrol_by_ssh, allow_from=networks,
                           machine=machine, allow_shared_key=allow_shared)
    if not isinstance(new, NewAccount):
        show_proposal(new, as_json=as_json)
        return
    if not as_json:
        click.echo(f"created {parsed_role.value} account {username}")
    show_new_account_secrets(new, as_json=as_json)


@user.command("list")
@json_option
@data_dir_option
def user_list(as_json: bool, data_dir: Path | None) -> None:
    """List accounts with their state (active, disabled, locked) and second factor.

    \b
    Example:
      blindpost user list --json
    """
    rows = open_app(data_dir).accounts.all(operator())
    if as_json:
        emit_json(rows)
        return
    emit_table(["username", "role", "partner", "ssh keys", "state", "second factor",
                "allowed from"],
               [[a.username, a.role.value, a.partner, len(a.ssh_keys), a.state,
                 a.second_factor, ",".join(a.allow_from) if a.allow_from else "anywhere"]
                for a in rows])


@user.command("show")
@click.argument("username")
@json_option
@data_dir_option
def user_show(username: str, as_json: bool, data_dir: Path | None) -> None:
    """Show one account: state, lockout, second factor, networks and SSH keys.

    \b
    Example:
      blindpost user show dr-lee
    """
    app = open_app(data_dir)
    info = app.accounts.get(operator(), username)
    grants = [g for g in app.machines.pending(operator()) if g.username == username]
    if as_json:
        emit_json({"account": info, "pending_machine_grants": grants})
        return
    partner = f" of partner {info.partner}" if info.partner else ""
    lines = [("account", f"{info.username} ({info.role.value}{partner})"),
             ("state", info.state),
             ("failed codes", f"{info.failures} counting toward a lockout"),
             ("second factor", info.second_factor),
             ("allowed from", ",".join(info.allow_from) if info.allow_from else "anywhere"),
             ("created", when(info.created_at))]
    lines += [("pending grant", f"#{g.id}: machine from {','.join(g.allow_from)}, proposed by "
               f"{g.proposed_by}; awaits a second admin") for g in grants]
    for label, value in lines:
        click.echo(f"{label:14} {value}")
    click.echo("ssh keys:" if info.ssh_keys else "ssh keys:      none")
    for key in info.ssh_keys:
        shared = " (shared)" if key.shared else ""
        click.echo(f"  {key.key_type} {key.fingerprint} {key.comment}{shared}".rstrip())


@user.command("disable")
@click.argument("username")
@yes_option
@data_dir_option
def user_disable(username: str, yes: bool, data_dir: Path | None) -> None:
    """Disable an account: it can no longer sign in, and its open SFTP sessions end
    within seconds on every worker and node.

    Says what it does and asks first (--yes in scripts). An admin is not disabled when
    fewer than two active admins with a usable second factor would remain.

    \b
    Example:
      blindpost user disable dr-lee
      blindpost user disable dr-lee --yes
    """
    app = open_app(data_dir)
    confirm(app.consequences.account_disable(operator(), username=username), yes=yes)
    app.accounts.disable(operator(), username=username)
    click.echo(f"disabled account {username}")


@user.command("enable")
@click.argument("username")
@proposer_option
@data_dir_option
def user_enable(username: str, by: str | None, data_dir: Path | None) -> None:
    """Enable a disabled account again (an admin or auditor: proposed --by an admin,
    applied when a second admin approves).

    \b
    Example:
      blindpost user enable dr-lee
    """
    app = open_app(data_dir)
    result = app.accounts.enable(acting(app, by, purpose="account enable propose"),
                                 username=username)
    if isinstance(result, AuthorityChangeInfo):
        show_proposal(result)
    else:
        click.echo(f"enabled account {username}")


@user.command("unlock")
@click.argument("username")
@data_dir_option
def user_unlock(username: str, data_dir: Path | None) -> None:
    """Lift an account's lockout and forget its failed codes (audited).

    \b
    Example:
      blindpost user unlock dr-lee
    """
    lifted = open_app(data_dir).auth.unlock(operator(), username=username)
    if lifted.blocked_until is not None:
        click.echo(f"unlocked account {username} (it was locked until "
                   f"{when(lifted.blocked_until)})")
    else:
        click.echo(f"account {username} was not locked; its {lifted.failures} failed codes "
                   "are forgotten")


@user.command("add-key")
@click.argument("username")
@click.argument("key_file", type=click.Path(path_type=Path, dir_okay=False))
@allow_shared_option
@proposer_option
@data_dir_option
def user_add_key(username: str, key_file: Path, allow_shared: bool, by: str | None,
                 data_dir: Path | None) -> None:
    """Add the SSH public keys in KEY_FILE to an account (to an admin or auditor:
    proposed --by an admin, added when a second admin approves).

    \b
    Example:
      blindpost user add-key dr-lee ~/.ssh/id_ed25519.pub
    """
    keys = read_key_file(key_file)
    app = open_app(data_dir)
    actor = acting(app, by, purpose="ssh key propose")
    for key in keys:
        result = app.accounts.add_key(actor, username=username, key=key,
                                      allow_shared=allow_shared)
        if isinstance(result, AuthorityChangeInfo):
            show_proposal(result)
        else:
            click.echo(f"added {key.key_type} {key.fingerprint} to {username}")


@user.command("remove-key")
@click.argument("username")
@click.argument("fingerprint")
@data_dir_option
def user_remove_key(username: str, fingerprint: str, data_dir: Path | None) -> None:
    """Remove one SSH key (named by its SHA256:… fingerprint, see `user show`).

    \b
    Example:
      blindpost user remove-key dr-lee SHA256:2Fo0bZ…
    """
    removed = open_app(data_dir).accounts.remove_key(operator(), username=username,
                                                     fingerprint=fingerprint)
    click.echo(f"removed {removed.key_type} {removed.fingerprint} from {username}")


@user.command("remove-passkeys")
@click.argument("username")
@data_dir_option
def user_remove_passkeys(username: str, data_dir: Path | None) -> None:
    """Remove every passkey of an account (one who lost theirs).

    A partner user then signs in to the portal as the first time: with a new enrolment
    code from `blindpost portal-code` (SSH key and one-time code), and registers a new
    passkey.

    \b
    Example:
      blindpost user remove-passkeys dr-lee
    """
    removed = open_app(data_dir).passkeys.remove_all(operator(), username=username)
    click.echo(f"removed {removed} passkey(s) of {username}")


@user.command("reset-totp")
@click.argument("username")
@click.option("--enrol-by-ssh", is_flag=True,
              help="Do not show the new secret: the holder enrols it at their next SFTP "
                   "sign-in with their key.")
@proposer_option
@json_option
@data_dir_option
def user_reset_totp(username: str, enrol_by_ssh: bool, by: str | None, as_json: bool,
                    data_dir: Path | None) -> None:
    """Replace an account's TOTP secret and print the new enrolment.

    An admin's or auditor's password and second factor are reset only when a second
    admin approves the proposal (--by); the approver is shown a one-time password and
    the holder enrols a new code at their next console sign-in.

    \b
    Example:
      blindpost user reset-totp dr-lee --enrol-by-ssh
      blindpost user reset-totp carol --by alice
    """
    app = open_app(data_dir)
    reset = app.accounts.reset_totp(acting(app, by, purpose="reset propose"),
                                    username=username, enrol_by_ssh=enrol_by_ssh)
    if isinstance(reset, AuthorityChangeInfo):
        show_proposal(reset, as_json=as_json)
    elif as_json:
        emit_json(reset)
    elif reset.totp_uri is None:
        show_enrolment_window(username, reset.enrol_until)
    else:
        show_totp_uri(reset.totp_uri)


@user.command("password")
@click.argument("username")
@data_dir_option
def user_password(username: str, data_dir: Path | None) -> None:
    """Change your own console password: the current one, the new one twice, then your
    current one-time code. Your other console sessions end.

    On a terminal each is asked for without echo; otherwise three lines are read from
    standard input (current password, new password, code).

    \b
    Example:
      blindpost user password alice
    """
    if sys.stdin.isatty():
        current = click.prompt("Current password", hide_input=True, err=True)
        new = click.prompt("New password (12 to 256 characters, not containing your "
                           "username)", hide_input=True, confirmation_prompt=True, err=True)
    else:
        current = sys.stdin.readline().rstrip("\n")
        new = sys.stdin.readline().rstrip("\n")
    app = open_app(data_dir)
    proven = prove(app, username, purpose="password change")
    app.accounts.change_password(proven, current_password=current, new_password=new)
    click.echo(f"changed the password of {username}; their console sessions ended")


@user.command("reset-password")
@click.argument("username")
@click.option("--by", "by", required=True, metavar="ADMIN",
              help="The admin proposing it (their one-time code is asked for); a second "
                   "admin approves it with `user approve-change`.")
@json_option
@data_dir_option
def user_reset_password(username: str, by: str, as_json: bool,
                        data_dir: Path | None) -> None:
    """Propose resetting an admin's or auditor's console password (their second factor
    stays). The approving admin is shown a one-time password for the holder, who signs
    in with it and their current code and chooses a new password.

    \b
    Example:
      blindpost user reset-password carol --by alice
      blindpost user approve-change 7 --by bob
    """
    app = open_app(data_dir)
    change = app.accounts.reset_password(prove(app, by, purpose="password reset propose"),
                                         username=username)
    show_proposal(change, as_json=as_json)


@user.command("set")
@click.argument("username")
@click.option("--allow-from", required=True, metavar="CIDR[,CIDR…]|any",
              help="The networks sign-in is allowed from; `any` lifts the limit.")
@click.option("--by", metavar="ADMIN",
              help="The admin proposing to widen a machine account's networks (a second "
                   "admin approves it).")
@data_dir_option
def user_set(username: str, allow_from: str, by: str | None, data_dir: Path | None) -> None:
    """Limit where an account may sign in from (refused elsewhere before a code is asked).

    Narrowing applies at once. Widening a machine account's networks is proposed with
    --by and applies once a second admin approves (`user approve`).

    \b
    Example:
      blindpost user set dr-lee --allow-from 192.0.2.0/24,2001:db8:5::/48
    """
    networks = parse_allow_from(allow_from)
    app = open_app(data_dir)
    actor = prove(app, by, purpose="machine network propose") if by else operator()
    result = app.accounts.set_allow_from(actor, username=username, allow_from=networks)
    if isinstance(result, int):
        click.echo(f"proposed (grant {result}): {username} from {networks}; a second admin "
                   f"approves with `blindpost user approve {result} --by NAME`")
    else:
        click.echo(f"{username} may sign in from {networks or 'anywhere'}")


@user.command("notify")
@click.argument("username")
@click.option("--email", metavar="ADDRESS",
              help="Mail a code to ADDRESS; the account's holder types it on their account "
                   "page to send their notifications there.")
@click.option("--off", is_flag=True, help="Stop them and forget the address (opt out).")
@click.option("--test", is_flag=True,
              help="Send a test e-mail to the account's address now, through the relay.")
@json_option
@data_dir_option
def user_notify(username: str, email: str | None, off: bool, test: bool, as_json: bool,
                data_dir: Path | None) -> None:
    """Propose an address for an account's e-mail notifications, turn them off, or show
    the setting (audited).

    A partner account hears when files wait for its partner, an admin when a key, grant
    or authority change awaits approval or an alarm is raised; never a file's name or
    content. An address given here is used only once the account's holder types the
    code mailed to it on their account page (/me), as when they give it themselves. The
    relay is set up with the notify_smtp_* settings.

    \b
    Examples:
      blindpost user notify dr-lee --email lee@uni-research.example
      blindpost user notify dr-lee --test
      blindpost user notify dr-lee --off
    """
    if (email is not None) + off + test > 1:
        raise UsageError("give one of --email ADDRESS, --off and --test")
    app = open_app(data_dir)
    service = app.notifications
    if test:
        address = service.send_test(operator(), username=username)
        click.echo(f"the relay accepted a test message to {address}")
        return
    if off:
        removed = service.unsubscribe(operator(), username=username)
        click.echo(f"notifications for {username} are off" if removed else
                   f"notifications for {username} were not on")
        return
    if email is not None:
        until = service.request_address(operator(), username=username, email=email)
        click.echo(f"a code was mailed to {email.strip()}: {username}'s notifications go "
                   f"there once {username} types it on their account page (/me) by "
                   f"{until.strftime('%Y-%m-%d %H:%M UTC')}")
        return
    setting = service.subscription(operator(), username=username)
    if as_json:
        emit_json(setting)
    elif setting.email is None:
        click.echo(f"notifications for {username} are off")
    else:
        click.echo(f"notifications for {username} go to {setting.email}"
                   + ("" if service.enabled else " (no relay is configured yet: set "
                      "notify_smtp_host)"))


@user.command("approve")
@click.argument("grant_id", type=click.IntRange(min=1))
@click.option("--by", required=True, metavar="ADMIN",
              help="The approving admin, not the proposer (their one-time code is asked for).")
@json_option
@data_dir_option
def user_approve(grant_id: int, by: str, as_json: bool, data_dir: Path | None) -> None:
    """Approve a machine account, or the widening of its networks, proposed by another admin.

    \b
    Example:
      blindpost user approve 2 --by bob
    """
    app = open_app(data_dir)
    grant = app.machines.approve(prove(app, by, purpose="machine approve"), grant_id=grant_id)
    if as_json:
        emit_json(grant)
    else:
        click.echo(f"approved grant {grant.id}: {grant.username} signs in with its key alone "
                   f"from {','.join(grant.allow_from)}")


@user.command("approve-change")
@click.argument("change_id", type=click.IntRange(min=1))
@click.option("--by", required=True, metavar="ADMIN",
              help="The approving admin: not the proposer, not the account changed (their "
                   "one-time code is asked for).")
@json_option
@data_dir_option
def user_approve_change(change_id: int, by: str, as_json: bool, data_dir: Path | None) -> None:
    """Approve an authority change proposed by another admin (see `user pending`) and
    print its one-time secret, for the approver alone.

    \b
    Example:
      blindpost user approve-change 4 --by bob
    """
    app = open_app(data_dir)
    applied = app.authority.approve(prove(app, by, purpose=f"authority approve {change_id}"),
                                    change_id=change_id)
    show_applied(applied, as_json=as_json)


def show_applied(applied: AppliedChange, *, as_json: bool) -> None:
    """Print an approved change and its one-time secret (shown once, to the approver)."""
    change = applied.change
    if as_json:
        emit_json({"change": change, "one_time_password": applied.one_time_password,
                   "token": applied.token})
        return
    click.echo(f"approved change {change.id}: {change.summary} (proposed by "
               f"{change.proposed_by})")
    if applied.one_time_password:
        click.echo(f"One-time password for {change.target} (shown once, to you alone): "
                   f"{applied.one_time_password}")
        if change.kind is ChangeKind.PASSWORD_RESET:
            click.echo(f"{change.target} signs in to the console with it and their current "
                       "one-time code, then chooses a new password.")
        else:
            click.echo(f"{change.target} sets a new password and enrols their own one-time "
                       "codes at their first console sign-in.")
    if applied.token:
        click.echo(f"Token (shown once, to you alone): {applied.token}")


@user.command("withdraw-change")
@click.argument("change_id", type=click.IntRange(min=1))
@click.option("--by", metavar="ADMIN",
              help="The admin withdrawing it (default: the local operator).")
@data_dir_option
def user_withdraw_change(change_id: int, by: str | None, data_dir: Path | None) -> None:
    """Withdraw a proposed authority change: it will never apply (audited).

    \b
    Example:
      blindpost user withdraw-change 4
    """
    app = open_app(data_dir)
    change = app.authority.withdraw(acting(app, by, purpose="authority withdraw"),
                                    change_id=change_id)
    click.echo(f"withdrew change {change.id}: {change.summary}")


@user.command("pending")
@json_option
@data_dir_option
def user_pending(as_json: bool, data_dir: Path | None) -> None:
    """List what waits for a second admin: machine account grants and authority changes.

    \b
    Example:
      blindpost user pending
    """
    app = open_app(data_dir)
    grants = app.machines.pending(operator())
    changes = app.authority.pending(operator())
    if as_json:
        emit_json({"machine_grants": grants, "authority_changes": changes})
        return
    rows: list[list[object]] = [
        [f"grant {g.id}", f"machine account {g.username} from {','.join(g.allow_from)}",
         g.proposed_by, when(g.proposed_at), f"user approve {g.id}"] for g in grants]
    rows += [[f"change {c.id}", c.summary, c.proposed_by, when(c.proposed_at),
              f"user approve-change {c.id}"] for c in changes]
    emit_table(["pending", "what", "proposed by", "proposed", "approve with"], rows)

