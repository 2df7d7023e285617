"""Installation commands: init, serve, purge, host-key, db upgrade."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
import time
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from ipaddress import ip_address
from pathlib import Path
from typing import Protocol

import click
import segno

from gateway import __version__
from gateway.account_values import NewAccount
from gateway.app import App
from gateway.cli.common import (
    data_dir_flag,
    data_dir_option,
    describe_data_dir,
    emit_json,
    open_app,
    operator,
    settings_for,
    when,
)
from gateway.cli.errors import fail
from gateway.config import data_dir_origin, parse_listen
from gateway.datadir import initialise
from gateway.db import upgrade
from gateway.db.engine import check_reachable, make_engine
from gateway.db.models import Role
from gateway.errors import ConflictError
from gateway.hostkey import host_key_fingerprint, public_host_key
from gateway.housekeeping import Housekeeping
from gateway.stop_signals import StopSignals


class Service(Protocol):
    """What an adapter's ``blindpost.services`` entry point returns when started."""

    @property
    def address(self) -> tuple[str, int]: ...

    def stop(self) -> None: ...

    def wait(self) -> None: ...


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


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where to create it (default: $BLINDPOST_DATA_DIR or ./var).")
@click.option("--admin", metavar="NAME", help="Create the first admin account.")
@click.option("--force", is_flag=True,
              help="Complete an existing data directory; keys are never overwritten.")
def init(data_dir: Path | None, admin: str | None, force: bool) -> None:
    """Create a data directory: keys, configuration, database and the first admin.

    The SSH host key and the audit signing key are created once (0600) and never
    overwritten. On any failure nothing half-made is left behind.

    \b
    Example:
      blindpost init --data-dir /var/lib/blindpost --admin alice
    """
    settings = settings_for(data_dir)
    try:
        result = initialise(settings.data_dir, admin=admin, force=force)
    except ConflictError as exc:
        raise ConflictError(f"{exc} (the data directory was chosen by "
                            f"{data_dir_origin(data_dir=data_dir_flag(data_dir))})") from exc
    click.echo(f"Initialised {result.data_dir}")
    if result.host_key_fingerprint:
        click.echo(f"SSH host key fingerprint: {result.host_key_fingerprint}")
    if result.adopted_rows:
        click.echo(f"Created keys/state_key and sealed the {result.adopted_rows} existing "
                   "rows with it, trusting the database as it is now (see docs/security.md)")
    if result.admin:
        show_new_account_secrets(result.admin)


@click.command("host-key")
@click.option("--host", "public", metavar="NAME[:PORT]",
              help="The name (and port) partners connect to (default: the listening "
                   "address, or this machine's name when it listens on every interface).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def host_key(public: str | None, as_json: bool, data_dir: Path | None) -> None:
    """Print the SFTP server's host key and fingerprint, for partners to pin.

    Send the fingerprint to partners through a second channel; their client shows it on
    the first connection. The known_hosts line can be handed out as it is: it names the
    host partners use, so give --host when they reach the server by another name (a
    load balancer, a public DNS name).

    \b
    Example:
      blindpost host-key --host sftp.registry.example --json
    """
    settings = settings_for(data_dir)
    key = public_host_key(settings.host_key_path)
    host, port, guessed = public_address(public, settings.sftp_listen)
    known_hosts = f"{known_hosts_name(host, port)} {key}"
    if as_json:
        emit_json({"fingerprint": host_key_fingerprint(key), "public_key": key,
                   "known_hosts": known_hosts})
        return
    click.echo(f"fingerprint  {host_key_fingerprint(key)}")
    click.echo(f"known_hosts  {known_hosts}")
    if guessed:
        click.echo(f"(the server listens on every interface; {host!r} is this machine's name: "
                   "give --host with the name partners use)", err=True)


def public_address(given: str | None, listen: str) -> tuple[str, int, bool]:
    """The host and port partners connect to, and whether the host was guessed."""
    listen_host, listen_port = parse_listen(listen, key="sftp_listen")
    if given:
        # NAME, NAME:PORT, [IPv6]:PORT, or a bare IPv6 address.
        if given.count(":") == 1 or (given.startswith("[") and "]:" in given):
            return (*parse_listen(given, key="--host"), False)
        return given.strip("[]"), listen_port, False
    if _unspecified(listen_host):
        return socket.getfqdn(), listen_port, True
    return listen_host, listen_port, False


def _unspecified(host: str) -> bool:
    try:
        return ip_address(host).is_unspecified
    except ValueError:
        return False


def known_hosts_name(host: str, port: int) -> str:
    """A host as known_hosts names it: bare on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


@click.command()
@click.option("--full", is_flag=True,
              help="Also list the whole store for leftovers the database does not know "
                   "(after a restore, or for a store written by Blindpost before 0.2).")
@data_dir_option
def purge(full: bool, data_dir: Path | None) -> None:
    """Purge expired files and sweep leftovers of interrupted uploads, once.

    Also signs an audit checkpoint if one is due, so a timer that runs only this
    keeps the log's checkpoints current.

    \b
    Example (from a systemd timer):
      blindpost purge --data-dir /var/lib/blindpost
    """
    app = open_app(data_dir)
    app.record_settings(component="purge")
    report = app.retention.purge(full=full)
    click.echo(f"purged {report.purged} files; removed {report.swept} leftover objects"
               + (f", {report.partials} partial uploads and {report.orphans} unreferenced "
                  "objects found by listing the store" if full else ""))
    Housekeeping(app, component="purge").checkpoint_if_due()
    app.close()


@click.command()
@data_dir_option
def serve(data_dir: Path | None) -> None:
    """Run the gateway until interrupted: the SFTP server, the console and the purger (every
    installed service).

    Applies pending database migrations first. The systemd unit in deploy/ runs this;
    production may instead run the parts as separate services (`blindpost sftp`,
    `blindpost console`, `blindpost purge`). SIGTERM or SIGINT (Ctrl-C) stops it:
    transfers under way get shutdown_drain_seconds to finish, the rest are aborted, and a
    last audit checkpoint is signed.

    \b
    Example:
      blindpost serve --data-dir ./var
    """
    app = open_app(data_dir)
    lock = _exclusive_lock(app.settings.data_dir / ".serve.lock",
                           describe_data_dir(app.settings, data_dir))
    upgrade(app.engine)
    app.record_settings(component="serve")
    logging.getLogger("gateway").setLevel(app.settings.log_level.upper())
    if app.settings.single_node:
        # The operator says nothing else writes this store, so every upload in progress
        # is a leftover of a crash: sweep them now, not after the grace.
        app.retention.purge(upload_grace=timedelta(0))
    # Caught from before the services start, so that a stop during start-up waits for it.
    stop = StopSignals()
    running: dict[str, Service] = {entry.name: entry.load()(app.settings)
                                   for entry in entry_points(group="blindpost.services")}
    chores = Housekeeping(app, component="serve")
    chores.started(services=sorted(running))
    _describe(app, running)
    try:
        chores.run(stop, purge=True)
    finally:
        begun = time.monotonic()
        for service in running.values():
            service.stop()
        for service in running.values():
            service.wait()
    chores.stopped(reason=stop.name, seconds=round(time.monotonic() - begun, 2))
    chores.final_checkpoint()
    app.close()
    os.close(lock)


def _describe(app: App, running: dict[str, Service]) -> None:
    """Tell the operator what runs where, and what to do first."""
    click.echo(f"Blindpost {__version__} serving {app.settings.data_dir.resolve()}")
    for switch in app.settings.insecure_switches:
        click.echo(f"WARNING: {switch} is on; every use is logged and audited", err=True)
    for name, service in sorted(running.items()):
        host, port = service.address
        click.echo(f"  {name:8} listening on {host}:{port}", nl=False)
        if name == "sftp":
            click.echo(f"  (sign in: sftp -P {port} USER@{host}, with your SSH key and "
                       "one-time code)")
        else:
            # A service may say what its operator should know (the console: its URL, TLS).
            notice = getattr(service, "notice", "")
            click.echo(f"  ({notice})" if notice else "")
    click.echo("  purger   every minute; stop everything with Ctrl-C")
    if not any(a.role in (Role.STAFF, Role.PARTNER) for a in app.accounts.all(operator())):
        click.echo("No SFTP users yet: `blindpost partner add`, `blindpost user add` "
                   "(see `blindpost --help` and the README).")


def _exclusive_lock(path: Path, described: str) -> int:
    """Hold an exclusive lock on ``path`` for the life of the process, or fail."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        fail(f"another `blindpost serve` is already running on {described}")
    return fd


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@data_dir_option
def db_upgrade(data_dir: Path | None) -> None:
    """Apply pending schema migrations.

    \b
    Example:
      BLINDPOST_DATABASE_URL=postgresql://blindpost@db/blindpost blindpost db upgrade
    """
    settings = settings_for(data_dir)
    engine = make_engine(settings.effective_database_url)
    check_reachable(engine)
    upgrade(engine)
    engine.dispose()
    click.echo("database is up to date")


@db.command("grant")
@click.argument("app_role")
@click.option("--apply", "apply_now", is_flag=True,
              help="Apply the grants now (as the owner role) instead of printing them.")
@data_dir_option
def db_grant(app_role: str, apply_now: bool, data_dir: Path | None) -> None:
    """Print (or apply) the least-privilege grants of the application role on PostgreSQL.

    The owner role runs `db upgrade`; the gateway runs as APP_ROLE, which may append
    to the audit tables but never update, delete or truncate them, and cannot change
    the schema. Re-run after every upgrade.

    \b
    Example (as the owner):
      BLINDPOST_DATABASE_URL=postgresql://blindpost_owner@db/blindpost \\
          blindpost db grant blindpost_app --apply
    """
    from gateway.db.grants import apply_grants, grant_statements

    settings = settings_for(data_dir)
    engine = make_engine(settings.effective_database_url)
    try:
        check_reachable(engine)
        if apply_now:
            apply_grants(engine, app_role)
            click.echo(f"granted the application privileges to {app_role}")
        else:
            for statement in grant_statements(engine, app_role):
                click.echo(statement + ";")
    finally:
        engine.dispose()

