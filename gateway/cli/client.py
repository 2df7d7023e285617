"""``blindpost send | fetch | trust``: the staff and partner clients of a gateway.

They run on a staff member's or partner's own machine and need no data directory:
``send`` encrypts there, to keys it pinned, and uploads; ``fetch`` downloads what is new,
verifies it and decrypts it there. Each run signs in once (SSH key and one one-time
code) and does all its work over that one connection.

Exit codes: 0 everything done, 1 something failed (each file's outcome is listed),
2 usage error.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.client.agreement_pins import partner_agreement
from gateway.client.connection import Connection, Credentials, connect, load_ssh_key
from gateway.client.hostkeys import (
    Endpoint,
    HostKeyCheck,
    HostKeyFingerprint,
    KnownHostsFile,
    PinnedHostKeys,
)
from gateway.client.progress import NoProgress, Progress, TerminalProgress
from gateway.client.recipient_pins import PinFile, compare
from gateway.client.send import (
    LocalReadError,
    RecipientsChangedError,
    SendResult,
    partner_recipients,
    send_file,
)
from gateway.client_paths import ClientPaths, client_paths
from gateway.errors import AuthenticationError, GatewayError, RemoteError, UsageError
from gateway.terminal import shown, shown_lines

if TYPE_CHECKING:
    from gateway.agreement_terms import Terms
    from gateway.client.agreement_pins import WaitingAgreement
    from gateway.client.fetch import Fetcher, FetchResult
    from gateway.client.fetched import FetchedRecord, RemoteFile
    from gateway.envelope import Identity
    from gateway.recipient_list import RecipientList

# `send` imports only what it runs: what fetch, portal-code and trust alone need (and
# gateway.cli.common, for --json, which brings the server's settings module) is
# imported by them. Each module spared is start-up time every `send` pays.

TOTP_COMMAND_SECONDS = 60
# /.portal-enrolment is a few lines; a larger answer is not the gateway's.
MAX_PORTAL_CODE_BYTES = 4096


def _notice(message: str) -> None:
    # Notices carry the gateway's words (its instructions, its error messages).
    click.echo(f"blindpost: {shown_lines(message)}", err=True)


def _connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every client command shares: where, who, and how to check the host."""
    options = [
        click.option("--host", required=True, help="The gateway's host name or address."),
        click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True,
                     help="The gateway's SFTP port."),
        click.option("--user", required=True, help="Your account on the gateway."),
        click.option("--key", "key_path", required=True, metavar="SSH_KEY",
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Your SSH private key (OpenSSH format)."),
        click.option("--known-hosts", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
                     help="Check the gateway's host key against this OpenSSH known_hosts "
                          "file instead of the key pinned on first use."),
        click.option("--host-key", metavar="SHA256:…",
                     help="Check the gateway's host key against this fingerprint (as "
                          "`blindpost host-key` prints it) instead of the pinned key."),
        click.option("--totp-command", metavar="CMD",
                     help="Run CMD (split like a shell would, but no shell) and use the "
                          "first line it prints as the one-time code, e.g. a password "
                          "manager's CLI. Default: ask on the terminal."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print a JSON summary on standard output instead of lines."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _host_keys(paths: ClientPaths, known_hosts: Path | None,
               host_key: str | None) -> HostKeyCheck:
    if known_hosts is not None and host_key is not None:
        raise click.UsageError("--known-hosts and --host-key exclude each other")
    if known_hosts is not None:
        return KnownHostsFile(known_hosts)
    if host_key is not None:
        return HostKeyFingerprint(host_key)
    return PinnedHostKeys(paths.known_hosts)


def _one_time_code(totp_command: str | None) -> Callable[[], str]:
    if totp_command is None:
        return _ask_code
    return lambda: _run_totp_command(totp_command)


def _ask_code() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("One-time code", hide_input=True, err=True))
    # A script may pipe the code in; a run with nowhere to read it from fails clearly.
    line: str = sys.stdin.readline().strip()
    if not line:
        raise AuthenticationError("no one-time code: there is no terminal to ask on and "
                                  "nothing on standard input; use --totp-command CMD")
    return line


def _run_totp_command(command: str) -> str:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--totp-command: {exc}") from None
    if not argv:
        raise UsageError("--totp-command is empty")
    try:
        # The user's own command, split without a shell: nothing is interpolated.
        done = subprocess.run(argv, capture_output=True, text=True, check=False,  # noqa: S603
                              timeout=TOTP_COMMAND_SECONDS, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthenticationError(f"--totp-command could not run: {exc}") from None
    lines = done.stdout.splitlines()
    if done.returncode != 0 or not lines or not lines[0].strip():
        detail = (done.stderr.strip().splitlines() or ["it printed nothing"])[0]
        raise AuthenticationError(f"--totp-command failed (exit {done.returncode}): "
                                  f"{detail[:200]}")
    return lines[0].strip()


def _passphrase() -> str:
    return str(click.prompt("Passphrase for the SSH key", hide_input=True, err=True))


@contextmanager
def _signed_in(host: str, port: int, user: str, key_path: Path, known_hosts: Path | None,
               host_key: str | None, totp_command: str | None) -> Iterator[Connection]:
    # Failures reach the user as one error line; paramiko's own log would repeat them.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    paths = client_paths()
    host_keys = _host_keys(paths, known_hosts, host_key)
    key = load_ssh_key(key_path, passphrase=_passphrase if sys.stdin.isatty() else None)
    credentials = Credentials(user, key, _one_time_code(totp_command))
    with connect(Endpoint(host, port), credentials=credentials, host_keys=host_keys,
                 notice=_notice) as connection:
        yield connection


def _progress(as_json: bool) -> TerminalProgress | NoProgress:
    return TerminalProgress() if sys.stderr.isatty() and not as_json else NoProgress()


def _amount(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


def _rate(size: int, seconds: float) -> str:
    return f"{_amount(size)} in {seconds:.1f} s ({_amount(size / max(seconds, 1e-3))}/s)"


def _emit_json(obj: object) -> None:
    from gateway.cli.common import emit_json

    emit_json(obj)


def _fail_json(as_json: bool, exc: GatewayError, **extra: object) -> None:
    if as_json:
        _emit_json({"ok": False, "error": exc.diagnostics(), **extra})


# -- send -------------------------------------------------------------------------------

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_connection_options
@click.argument("partner")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
def send(host: str, port: int, user: str, key_path: Path, known_hosts: Path | None,
         host_key: str | None, totp_command: str | None, as_json: bool, partner: str,
         files: tuple[Path, ...]) -> None:
    """Encrypt FILEs on this machine to PARTNER's keys and upload them as FILE.age.

    The partner's published keys are pinned on first use (in
    ~/.config/blindpost/known_recipients); if the gateway later publishes others,
    nothing is sent until you run `blindpost trust PARTNER`. The plaintext never
    leaves this machine and no temporary plaintext file is written. After each upload
    the ciphertext SHA-256 the gateway recorded must equal the one computed here.

    \b
    Examples:
      blindpost send --host gw.example --user clerk --key ~/.ssh/id_ed25519 \\
          uni-research extract.csv cohort.csv
      blindpost send --host gw.example --user clerk --key ~/.ssh/id_ed25519 \\
          --totp-command "pass otp blindpost" --json uni-research extract.csv
    """
    names = [path.name for path in files]
    if len(set(names)) != len(names):
        raise click.UsageError("two FILEs have the same name; they would replace each other")
    results: list[SendResult] = []
    fingerprints: list[str] = []
    paths = client_paths()
    try:
        with _signed_in(host, port, user, key_path, known_hosts, host_key,
                        totp_command) as connection:
            recipients = partner_recipients(
                connection.sftp, gateway=str(Endpoint(host, port)), partner=partner,
                pins=PinFile(paths.known_recipients), pending=PinFile(paths.pending_recipients),
                notice=_notice)
            terms = partner_agreement(connection.sftp, gateway=str(Endpoint(host, port)),
                                      partner=partner, pins=paths.known_agreements,
                                      pending=paths.pending_agreements, notice=_notice)
            fingerprints = sorted(recipients.fingerprints)
            with _progress(as_json) as progress:
                results = _send_all(connection, partner, files, recipients, progress, terms)
    except RecipientsChangedError as exc:
        for line in exc.change.describe():
            click.echo(line, err=True)
        _fail_json(as_json, exc, added=[asdict(k) for k in exc.change.added],
                   removed=[asdict(k) for k in exc.change.removed])
        raise
    except GatewayError as exc:
        _fail_json(as_json, exc, files=[asdict(r) for r in results])
        raise
    _report_sent(results, fingerprints, as_json)


def _send_all(connection: Connection, partner: str, files: tuple[Path, ...],
              recipients: RecipientList, progress: Progress,
              terms: Terms | None) -> list[SendResult]:
    results: list[SendResult] = []
    for number, path in enumerate(files):
        try:
            results.append(send_file(connection.sftp, partner=partner, path=path,
                                     recipients=recipients, progress=progress,
                                     terms=terms))
        except LocalReadError as exc:
            # Closing the half-sent file would commit it; hanging up discards it.
            connection.close()
            results.append(SendResult(str(path), f"/{partner}/{path.name}.age",
                                      error=f"{exc}; the upload was discarded"))
            results += [SendResult(str(rest), f"/{partner}/{rest.name}.age",
                                   error="not sent: the connection was closed after the "
                                   f"error in {path}") for rest in files[number + 1:]]
            break
    return results


def _report_sent(results: list[SendResult], fingerprints: list[str], as_json: bool) -> None:
    ok = all(result.ok for result in results)
    if as_json:
        _emit_json({"ok": ok, "recipients": fingerprints, "files": [asdict(r) for r in results]})
    else:
        for r in results:
            if r.ok:
                click.echo(f"sent    {r.file} -> {r.remote}  {_rate(r.size, r.seconds)}, "
                           f"sha256 {r.sha256}")
            else:
                click.echo(f"FAILED  {r.file}: {shown_lines(r.error or '')}")
    if not ok:
        sys.exit(1)


# -- fetch ------------------------------------------------------------------------------

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_connection_options
@click.option("-i", "--identity", "identity_files", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your identity file (`blindpost keygen` or `age-keygen`). Repeatable.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(), show_default=True,
              help="Where the decrypted files go; created (mode 0700) if missing.")
@click.option("--keep-ciphertext", is_flag=True, help="Keep NAME.age next to NAME.")
@click.option("--all", "fetch_all", is_flag=True,
              help="Fetch every file in the inbox, also those fetched before.")
@click.option("--overwrite", is_flag=True, help="Replace existing files of the same name.")
def fetch(host: str, port: int, user: str, key_path: Path, known_hosts: Path | None,
          host_key: str | None, totp_command: str | None, as_json: bool,
          identity_files: tuple[Path, ...], out_dir: Path, keep_ciphertext: bool,
          fetch_all: bool, overwrite: bool) -> None:
    """Download what is new in your inbox, verify it and decrypt it into --out.

    Every file's ciphertext SHA-256 must equal the one the gateway recorded, and every
    chunk must authenticate, before the plaintext appears under its name (mode 0600).
    Each file is flushed to the disk (fsync) before it is renamed into place and
    recorded as fetched, so a power cut cannot lose a file the record says you have.
    An interrupted download resumes where it stopped. What was fetched is remembered
    (in ~/.local/state/blindpost), so the next run fetches only what is new.

    \b
    Examples:
      blindpost fetch --host gw.example --user dr-lee --key ~/.ssh/id_ed25519 \\
          -i partner.key --out inbox/
      blindpost fetch --host gw.example --user dr-lee --key ~/.ssh/id_ed25519 \\
          -i partner.key --totp-command "pass otp blindpost" --json
    """
    from gateway.client.fetch import Fetcher, inbox
    from gateway.client.fetched import FetchedRecord

    identities = _identities(identity_files)
    _make_folder(out_dir)
    results: list[FetchResult] = []
    record = FetchedRecord(client_paths().fetched, f"{user}@{Endpoint(host, port)}")
    try:
        with _signed_in(host, port, user, key_path, known_hosts, host_key,
                        totp_command) as connection, _progress(as_json) as progress:
            fetcher = Fetcher(connection.sftp, out_dir=out_dir, identities=identities,
                              record=record, progress=progress,
                              keep_ciphertext=keep_ciphertext, overwrite=overwrite)
            listed = inbox(connection.sftp)
            # One at a time, so that a failure still reports the files before it.
            for entry in _wanted(fetcher, record, listed, fetch_all):
                results.append(fetcher.fetch(entry, now=datetime.now(UTC)))  # noqa: PERF401
            results += _gone(fetcher, record, listed)
    except GatewayError as exc:
        _fail_json(as_json, exc, files=[asdict(r) for r in results])
        raise
    _report_fetched(results, as_json)


def _make_folder(path: Path) -> None:
    """Create --out (and its parents) if missing: decrypted files need a private home."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise UsageError(f"--out {path}: exists and is not a folder") from None
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot create the folder "
                         f"({exc.strerror or exc})") from None


def _identities(paths: tuple[Path, ...]) -> list[Identity]:
    from gateway.envelope import parse_identities_file

    identities: list[Identity] = []
    for path in paths:
        try:
            identities += parse_identities_file(path.read_text(encoding="utf-8",
                                                               errors="replace"))
        except GatewayError as exc:
            raise UsageError(f"{path}: {exc.diagnostics()}") from None
    return identities


def _wanted(fetcher: Fetcher, record: FetchedRecord, listed: list[RemoteFile],
            fetch_all: bool) -> list[RemoteFile]:
    """New files, and begun downloads whose last byte arrived before a stop."""
    from gateway.client.fetch import checked
    from gateway.client.names import UnsafeNameError

    fetched = {} if fetch_all else record.fetched()
    wanted = [entry for entry in listed if fetched.get(entry.transfer_id) != entry.sha256]
    listed_ids = {entry.transfer_id for entry in listed}
    for begun in record.begun():
        try:
            checked(begun)
        except UnsafeNameError:
            continue  # Recorded by an older client from a hostile gateway: never used.
        if begun.transfer_id not in listed_ids and fetcher.complete_locally(begun):
            wanted.append(begun)
    return wanted


def _gone(fetcher: Fetcher, record: FetchedRecord, listed: list[RemoteFile]
          ) -> list[FetchResult]:
    """Begun downloads whose file left the inbox, each with the gateway's reason (told
    once: the download is then forgotten)."""
    from gateway.client.names import UnsafeNameError

    listed_ids = {entry.transfer_id for entry in listed}
    results = []
    for begun in record.begun():
        if begun.transfer_id in listed_ids or fetcher.complete_locally(begun):
            continue
        try:
            gone = fetcher.gone(begun)
        except UnsafeNameError:
            continue
        if gone is not None:
            results.append(gone)
    return results


def _report_fetched(results: list[FetchResult], as_json: bool) -> None:
    # A file the gateway says is gone is told, not a failure of this run.
    ok = all(result.ok or result.gone for result in results)
    if as_json:
        _emit_json({"ok": ok, "files": [asdict(r) for r in results]})
    elif not results:
        click.echo("nothing new in the inbox")
    else:
        for r in results:
            if r.ok:
                resumed = f", resumed at byte {r.resumed_at}" if r.resumed_at else ""
                click.echo(f"fetched {shown(r.name)} -> {shown(r.path or '')}  "
                           f"{_rate(r.size, r.seconds)}, sha256 {r.sha256}{resumed}")
            elif r.gone:
                click.echo(f"GONE    {shown(r.name)}: {shown_lines(r.error or '')}")
            else:
                click.echo(f"FAILED  {shown(r.name)}: {shown_lines(r.error or '')}")
    if not ok:
        sys.exit(1)


# -- portal-code ------------------------------------------------------------------------

@click.command(name="portal-code", context_settings={"help_option_names": ["-h", "--help"]})
@_connection_options
def portal_code(host: str, port: int, user: str, key_path: Path, known_hosts: Path | None,
                host_key: str | None, totp_command: str | None, as_json: bool) -> None:
    """Get the one-time code your first portal passkey takes.

    Signs in over SFTP with your SSH key and one-time code, as `fetch` does, and reads
    /.portal-enrolment: the first passkey of your portal account then rests on both.
    Type the code on the portal's sign-in page within 10 minutes; it works once, and
    running this again replaces it.

    \b
    Example:
      blindpost portal-code --host gw.example --user dr-lee --key ~/.ssh/id_ed25519
    """
    from gateway.portal_code import parse as parse_portal_code
    from gateway.sftp_extensions import PORTAL_ENROLMENT_FILE

    try:
        with _signed_in(host, port, user, key_path, known_hosts, host_key,
                        totp_command) as connection:
            answer = connection.sftp.read_small(f"/{PORTAL_ENROLMENT_FILE}",
                                                limit=MAX_PORTAL_CODE_BYTES)
        try:
            issued = parse_portal_code(answer.decode("utf-8", "replace"))
        except ValueError as exc:
            raise RemoteError(str(exc)) from None
    except GatewayError as exc:
        _fail_json(as_json, exc)
        raise
    if as_json:
        _emit_json({"ok": True, "account": issued.username, "code": issued.code,
                   "expires_at": issued.expires_at.isoformat()})
        return
    click.echo(f"Portal enrolment code for {shown(issued.username)}: {issued.code}")
    click.echo(f"Type it on the portal's sign-in page before "
               f"{issued.expires_at:%Y-%m-%d %H:%M} UTC; it works once.")


# -- trust ------------------------------------------------------------------------------

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("partner")
@click.option("--host", help="The gateway, if changes wait at more than one.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
def trust(partner: str, host: str | None, port: int) -> None:
    """Accept PARTNER's changed keys, after showing what changed and asking.

    `blindpost send` refuses to encrypt to keys that differ from the pinned ones and
    records the gateway's new set; this shows the old and new fingerprints again.
    Compare the new ones with the registry (by phone, not by e-mail from the gateway)
    before you answer yes. A looser data-sharing agreement that `send` refused is
    shown and accepted the same way.

    \b
    Example:
      blindpost trust uni-research
    """
    from gateway.client.agreement_pins import waiting_agreements

    paths = client_paths()
    pins, pending = PinFile(paths.known_recipients), PinFile(paths.pending_recipients)
    waiting = {gateway: keys for (gateway, slug), keys in pending.load().items()
               if slug == partner and (host is None or gateway == str(Endpoint(host, port)))}
    agreements = waiting_agreements(paths.known_agreements, paths.pending_agreements, partner,
                                    str(Endpoint(host, port)) if host else None)
    if agreements and not waiting:
        _trust_agreements(agreements, paths)
        return
    if not waiting:
        raise UsageError(f"no change of {partner}'s keys is waiting; `blindpost send` "
                         "records one when it refuses to send")
    if len(waiting) > 1:
        raise UsageError(f"changes of {partner}'s keys wait at {', '.join(sorted(waiting))}; "
                         "name one with --host and --port")
    [(gateway, keys)] = waiting.items()
    change = compare(gateway, partner, pins.load().get((gateway, partner), ()), keys)
    for line in change.describe() if change else [f"keys of {partner} at {gateway}: "
                                                  "unchanged"]:
        click.echo(line)
    if not click.confirm(f"Encrypt files for {partner} to the new keys from now on?",
                         default=False):
        click.echo("nothing changed")
        sys.exit(1)
    pins.replace(gateway, partner, keys)
    pending.replace(gateway, partner, None)
    click.echo(f"pinned {len(keys)} key(s) of {partner} at {gateway}")
    _trust_agreements(agreements, paths)


def _trust_agreements(agreements: list[WaitingAgreement], paths: ClientPaths) -> None:
    """Show each looser agreement waiting, and pin it if the person says yes."""
    from gateway.client.agreement_pins import accept

    for change in agreements:
        for line in change.describe():
            click.echo(line)
        if not click.confirm(f"Check files for {change.partner} against the new agreement "
                             "from now on?", default=False):
            click.echo("agreement not changed")
            sys.exit(1)
        accept(paths.known_agreements, paths.pending_agreements, change)
        click.echo(f"pinned the data-sharing agreement of {change.partner} at "
                   f"{change.gateway}")
