"""The blindpost CLI end to end in a temporary data directory (in-process runner)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pyotp
import pytest
from click.testing import CliRunner, Result

from gateway import envelope, totp
from gateway.actors import Actor
from gateway.app import App
from gateway.cli.program import main
from gateway.config import load_settings
from tests.conftest import FakeClock


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name in [n for n in __import__("os").environ if n.startswith("BLINDPOST_")]:
        monkeypatch.delenv(name)
    data_dir = tmp_path / "var"
    runner = CliRunner()

    def invoke(*args: str, data: bool = True, stdin: str | None = None) -> Result:
        prefix = ["--data-dir", str(data_dir)] if data else []
        return runner.invoke(main, [*prefix, *args], catch_exceptions=False, input=stdin)

    invoke.data_dir = data_dir  # type: ignore[attr-defined]
    invoke.secrets = {}  # type: ignore[attr-defined]
    return invoke


def _secret(output: str) -> str:
    return output.split("secret=")[1].split("&", maxsplit=1)[0]


@pytest.fixture
def ready(run):  # type: ignore[no-untyped-def]
    init = run("init", "--admin", "alice")
    assert init.exit_code == 0
    bob = run("user", "add", "bob", "--role", "admin")
    assert bob.exit_code == 0
    run.secrets.update(alice=_secret(init.output), bob=_secret(bob.output))
    assert run("partner", "add", "uni", "--name", "University", "--retention", "2w").exit_code == 0
    return run


def code(secret: str, ahead: int) -> str:
    """The code ``ahead`` time steps from now (the check accepts now and the next step, so
    one account can prove itself twice without a test waiting 30 seconds)."""
    step = totp.time_step(datetime.now(UTC)) + ahead
    return pyotp.TOTP(secret).at(step * totp.STEP_SECONDS) + "\n"


def _ssh_key(tmp_path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    return tmp_path / "k.pub"


def test_init_prints_secrets_once(run) -> None:  # type: ignore[no-untyped-def]
    result = run("init", "--admin", "alice")
    assert result.exit_code == 0, result.output
    assert "One-time password for alice: " in result.output
    assert "otpauth://totp/Blindpost:alice?secret=" in result.output
    again = run("init", "--admin", "alice")
    assert again.exit_code == 1
    assert "already exists; use --force" in again.output


def test_partner_commands(ready) -> None:  # type: ignore[no-untyped-def]
    listed = json.loads(ready("partner", "list", "--json").output)
    assert listed[0]["slug"] == "uni" and listed[0]["retention"] == "14d"
    assert listed[0]["retention_seconds"] == 14 * 86400
    shown = ready("partner", "show", "uni")
    assert "none (uploads are refused)" in shown.output
    assert ready("partner", "disable", "uni", "--yes").exit_code == 0
    assert json.loads(ready("partner", "show", "uni", "--json").output)["disabled"] is True


def test_partner_set(ready) -> None:  # type: ignore[no-untyped-def]
    changed = ready("partner", "set", "uni", "--retention", "90m", "--max-downloads", "2",
                    "--name", "Uni Research")
    assert changed.exit_code == 0, changed.output
    assert changed.output.strip() == ("partner uni: retention 90m, at most 2 downloads, name "
                                      "'Uni Research'")
    assert ready("partner", "set", "uni", "--no-download-limit").exit_code == 0
    shown = json.loads(ready("partner", "show", "uni", "--json").output)
    assert (shown["retention"], shown["max_downloads"], shown["name"]) == (
        "90m", None, "Uni Research")
    lines = ready("audit", "log", "--tag", "partner:change", "--json").output.splitlines()
    details = [json.loads(line)["details"] for line in lines]
    assert (details[0]["retention_old"], details[0]["retention_new"]) == ("14d", "90m")
    assert details[0]["name_new"] == "Uni Research"
    assert details[1] == {"max_downloads_old": 2, "max_downloads_new": None,
                          "os_user": details[1]["os_user"], "source": "local"}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["partner", "add", "Bad Slug"], 2, "invalid partner slug"),
    (["partner", "show", "nobody"], 2, "unknown partner 'nobody'"),
    (["partner", "add", "uni"], 1, "already exists"),
    (["partner", "add", "x", "--retention", "forever"], 2, "invalid retention 'forever'"),
    (["partner", "add", "x", "--retention", "90d"], 2,
     "retention must be between 1s and 30d (the max_retention setting), got 90d"),
    (["partner", "add", "x", "--retention", "0s"], 2, "must be longer than zero"),
    (["partner", "add", "x", "--retention", "-3d"], 2, "invalid retention '-3d'"),
    (["partner", "add", "x", "--retention", "7x"], 2, "invalid retention '7x'"),
    (["partner", "set", "uni"], 2, "nothing to change"),
    (["partner", "set", "uni", "--max-downloads", "2", "--no-download-limit"], 2, "not both"),
    (["partner", "set", "nobody", "--name", "X"], 2, "unknown partner 'nobody'"),
    (["partner", "set", "uni", "--retention", "31d"], 2, "retention must be between"),
    (["user", "add", "eve", "--role", "wizard"], 2, "unknown role 'wizard'"),
    (["user", "add", "eve", "--role", "partner"], 2, "--partner is required"),
    (["user", "add", "eve", "--role", "partner", "--partner", "nope"], 2, "unknown partner"),
    (["user", "disable", "ghost"], 2, "unknown account 'ghost'"),
    (["key", "propose", "uni", "age1garbage", "--by", "alice"], 2, "blindpost: error:"),
    (["key", "approve", "99", "--by", "alice"], 2, "needs alice's current one-time code"),
    # Integers no column holds used to end in a driver's OverflowError (issue 15).
    (["partner", "add", "big", "--max-downloads", str(10**30)], 2,
     "max downloads must be between 1 and 2147483647"),
    (["partner", "add", "big", "--max-downloads", str(2**31)], 2,
     "max downloads must be between 1 and 2147483647"),
    (["audit", "prove", str(10**30)], 2, f"there is no audit entry {10**30}"),
    (["audit", "prove", str(2**63)], 2, f"there is no audit entry {2**63}"),
    (["audit", "prove", "5000"], 2, "there is no audit entry 5000"),
])
def test_errors_are_one_line_with_exit_code(ready, args: list[str], code: int,  # type: ignore[no-untyped-def]
                                            message: str) -> None:
    result = ready(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["approve", "revoke"])
@pytest.mark.parametrize("key_id", [str(10**30), str(2**31), "0"])
def test_absurd_key_id_is_one_line(ready, command: str, key_id: str) -> None:  # type: ignore[no-untyped-def]
    result = ready("key", command, key_id, "--by", "alice", stdin=code(ready.secrets["alice"], 0))
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"blindpost: error: unknown key id {key_id}"


def test_user_commands(ready, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_file = _ssh_key(tmp_path)
    added = json.loads(ready("user", "add", "lee", "--role", "partner", "--partner", "uni",
                             "--ssh-key", str(key_file), "--json").output)
    assert added["one_time_password"] is None
    assert added["totp_uri"].startswith("otpauth://totp/Blindpost:lee?")
    proposed = json.loads(ready("user", "add", "aud", "--role", "auditor", "--by", "alice",
                                "--json", stdin=code(ready.secrets["alice"], 0)).output)
    assert proposed["pending"]["kind"] == "account-create"
    applied = json.loads(ready("user", "approve-change", str(proposed["pending"]["id"]),
                               "--by", "bob", "--json", stdin=code(ready.secrets["bob"], 0)).output)
    assert applied["one_time_password"] and applied["change"]["approved_by"] == "bob"
    users = {u["username"]: u for u in json.loads(ready("user", "list", "--json").output)}
    assert users["lee"]["ssh_keys"][0]["fingerprint"].startswith("SHA256:")
    assert users["lee"]["partner"] == "uni"
    duplicate = ready("user", "add-key", "lee", str(key_file))
    assert duplicate.exit_code == 1 and "already has key" in duplicate.output
    reset = json.loads(ready("user", "reset-totp", "lee", "--json").output)
    assert reset["totp_uri"] != added["totp_uri"]
    assert ready("user", "disable", "lee", "--yes").exit_code == 0
    assert json.loads(ready("user", "list", "--json").output)[-1]["disabled"] is True


def test_malformed_ssh_key_file(ready, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBroken\n")
    result = ready("user", "add", "x", "--role", "staff", "--ssh-key", str(bad))
    assert result.exit_code == 2
    assert "malformed SSH public key" in result.output
    assert "x" not in [u["username"] for u in json.loads(ready("user", "list", "--json").output)]


def test_key_two_person_rule(ready) -> None:  # type: ignore[no-untyped-def]
    alice, bob = ready.secrets["alice"], ready.secrets["bob"]
    recipient = str(envelope.generate_identity().recipient)
    proposed = json.loads(ready("key", "propose", "uni", recipient, "--by", "alice", "--json",
                                stdin=code(alice, 0)).output)
    assert proposed["kind"] == "mlkem768x25519" and proposed["state"] == "proposed"
    assert proposed["proposed_by"] == "alice"
    same = ready("key", "approve", str(proposed["id"]), "--by", "alice", stdin=code(alice, 1))
    assert same.exit_code == 1 and "two-person rule" in same.output
    approved = ready("key", "approve", str(proposed["id"]), "--by", "bob", stdin=code(bob, 0))
    assert approved.exit_code == 0, approved.output
    keys = json.loads(ready("key", "list", "--partner", "uni", "--json").output)
    assert keys[0]["state"] == "approved" and keys[0]["approved_by"] == "bob"
    revoked = ready("key", "revoke", str(proposed["id"]), "--by", "bob", "--yes",
                    stdin=code(bob, 1))
    assert revoked.exit_code == 0, revoked.output


def _stepups(data_dir: Path) -> list[dict[str, object]]:
    lines = CliRunner().invoke(main, ["--data-dir", str(data_dir), "audit", "log",
                                      "--json"]).output.splitlines()
    return [e for e in map(json.loads, lines) if e["tag"].startswith("auth:stepup:")]


def test_key_changes_need_a_fresh_code(ready) -> None:  # type: ignore[no-untyped-def]
    alice, bob = ready.secrets["alice"], ready.secrets["bob"]
    recipient = str(envelope.generate_identity().recipient)
    key_id = json.loads(ready("key", "propose", "uni", recipient, "--by", "alice", "--json",
                              stdin=code(alice, 0)).output)["id"]
    missing = ready("key", "approve", str(key_id), "--by", "bob", stdin="")
    assert missing.exit_code == 2 and "needs bob's current one-time code" in missing.output
    wrong = ready("key", "approve", str(key_id), "--by", "bob", stdin="000000\n")
    assert wrong.exit_code == 1 and "wrong code" in wrong.output
    used = code(bob, 0)
    assert ready("key", "approve", str(key_id), "--by", "bob", stdin=used).exit_code == 0
    replayed = ready("key", "revoke", str(key_id), "--by", "bob", "--yes", stdin=used)
    assert replayed.exit_code == 1 and "replayed code" in replayed.output
    events = _stepups(ready.data_dir)
    assert [(e["tag"], e["details"].get("reason")) for e in events] == [
        ("auth:stepup:success", None),
        ("auth:stepup:failure", "no one-time code given"),
        ("auth:stepup:failure", "wrong code"),
        ("auth:stepup:success", None),
        ("auth:stepup:failure", "replayed code"),
    ]
    assert all(e["details"]["os_user"] and e["details"]["source"] == "local" for e in events)
    approval = json.loads(ready("key", "list", "--json").output)[0]
    assert approval["state"] == "approved"


def test_host_key_matches_what_init_printed(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    printed = run("init").output.split("SSH host key fingerprint: ")[1].split()[0]
    shown = json.loads(run("host-key", "--json").output)
    assert shown["fingerprint"] == printed
    assert shown["known_hosts"].startswith("[127.0.0.1]:2222 ssh-ed25519 ")
    fingerprint = subprocess.run(["ssh-keygen", "-lf", "-"], input=shown["public_key"],
                                 capture_output=True, text=True, check=True).stdout
    assert printed in fingerprint


def test_version_and_db_upgrade(ready) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(ready("version", "--json").output)["version"]
    assert ready("db", "upgrade").output.strip() == "database is up to date"


def test_uninitialised_data_dir(run) -> None:  # type: ignore[no-untyped-def]
    result = run("partner", "list")
    assert result.exit_code == 1
    assert f"{run.data_dir} (chosen by --data-dir) is not an initialised data directory" \
        in result.output
    assert "run `blindpost init` there" in result.output


def test_unreachable_database(ready, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BLINDPOST_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = ready("db", "upgrade")
    assert result.exit_code == 1
    assert result.output.startswith("blindpost: error: cannot reach the database:")


def test_invalid_config_file(ready) -> None:  # type: ignore[no-untyped-def]
    (ready.data_dir / "blindpost.toml").write_text("lockout_threshold = -3\n")
    result = ready("partner", "list")
    assert result.exit_code == 1
    assert "lockout_threshold: must be a positive integer" in result.output


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found += _all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _all_commands(main), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    assert len(_all_commands(main)) > 25
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, " ".join(path)


def test_integrity_check_and_state_key_rotation(ready) -> None:  # type: ignore[no-untyped-def]
    ok = ready("integrity", "check")
    assert ok.exit_code == 0 and ok.output.startswith("integrity OK: ")
    rotated = ready("state-key", "rotate")
    assert rotated.exit_code == 0 and "rows re-sealed" in rotated.output
    assert ready("integrity", "check").exit_code == 0
    assert ready("audit", "verify").exit_code == 0
    import sqlite3

    with sqlite3.connect(ready.data_dir / "blindpost.db") as db:
        db.execute("UPDATE partners SET retention_seconds = 30 * 86400")
    failed = ready("integrity", "check", "--json")
    report = json.loads(failed.stdout)
    assert failed.exit_code == 1 and report["findings"] == [
        {"table": "partners", "row": "1", "reason": "seal does not match"}]
    verify = ready("audit", "verify")
    assert verify.exit_code == 1
    assert ("partners row uni: retention_seconds: the log implies 1209600, the database holds "
            "2592000") in verify.output
    refused = ready("state-key", "rotate")
    assert refused.exit_code == 1 and "partners row 1" in refused.output


def test_purge_signs_a_checkpoint_when_one_is_due(ready) -> None:  # type: ignore[no-untyped-def]
    """`blindpost purge` from a timer keeps checkpoints current without `serve`."""
    settings = load_settings(data_dir=ready.data_dir, environ={})
    assert ready("purge").exit_code == 0  # Records the settings, which appends entries.
    # A checkpoint an hour old, and one entry after it: a checkpoint is due now.
    earlier = App(settings, clock=FakeClock(datetime.now(UTC) - timedelta(hours=1)))
    with earlier.transaction() as session:
        earlier.audit.checkpoint(session)
    earlier.partners.add(actor=Actor.local_operator(), slug="later")
    earlier.close()
    result = ready("purge")
    assert result.exit_code == 0, result.output
    app = App(settings)
    with app.transaction() as session:
        latest = app.audit.latest_checkpoint(session)
        size = app.audit.size(session)
    app.close()
    assert latest is not None and latest.checkpoint.size == size - 1
    assert datetime.now(UTC) - latest.created_at < timedelta(minutes=1)


def test_token_create_list_revoke(ready) -> None:  # type: ignore[no-untyped-def]
    created = ready("token", "create", "nightly", "--role", "auditor", "--expires", "30d",
                    "--json")
    assert created.exit_code == 0, created.output
    document = json.loads(created.output)
    assert document["token"].startswith("bpt_")
    assert document["role"] == "auditor"
    assert document["expires_at"] is not None
    listed = json.loads(ready("token", "list", "--json").output)
    assert [(t["name"], t["state"]) for t in listed] == [("nightly", "active")]
    assert "token" not in listed[0]
    assert document["token"] not in ready("token", "list").output
    assert ready("token", "revoke", "nightly").exit_code == 0
    assert json.loads(ready("token", "list", "--json").output)[0]["state"] == "revoked"
    again = ready("token", "revoke", "nightly")
    assert again.exit_code == 1
    assert "already revoked" in again.output
    staff = ready("token", "create", "x", "--role", "staff")
    assert staff.exit_code == 2
    assert "admin or auditor" in staff.output


# -- everyday operations: lifecycle commands, each audited ------------------------------

def _tags(data_dir: Path) -> list[tuple[str, str]]:
    lines = CliRunner().invoke(main, ["--data-dir", str(data_dir), "audit", "log",
                                      "--json"]).output.splitlines()
    return [(e["tag"], e["subject"]) for e in map(json.loads, lines)]


def test_account_lifecycle_commands(ready, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_file = _ssh_key(tmp_path)
    assert ready("user", "add", "lee", "--role", "partner", "--partner", "uni", "--ssh-key",
                 str(key_file), "--allow-from", "192.0.2.0/24").exit_code == 0
    shown = ready("user", "show", "lee")
    assert "state          active" in shown.output
    assert "allowed from   192.0.2.0/24" in shown.output
    assert "second factor  totp" in shown.output
    fingerprint = json.loads(ready("user", "show", "lee", "--json").output)[
        "account"]["ssh_keys"][0]["fingerprint"]
    assert ready("user", "disable", "lee", "--yes").exit_code == 0
    assert "disabled" in ready("user", "list").output
    assert ready("user", "enable", "lee").exit_code == 0
    again = ready("user", "enable", "lee")
    assert again.exit_code == 1 and "is not disabled" in again.output
    assert ready("user", "set", "lee", "--allow-from", "any").output.strip() == \
        "lee may sign in from anywhere"
    bad = ready("user", "set", "lee", "--allow-from", "10.1.2.3/8")
    assert bad.exit_code == 2 and "invalid network '10.1.2.3/8'" in bad.output
    shared = ready("user", "add", "clerk", "--role", "staff", "--ssh-key", str(key_file))
    assert shared.exit_code == 1 and "already registered to lee" in shared.output
    assert ready("user", "add", "clerk", "--role", "staff", "--ssh-key", str(key_file),
                 "--allow-shared-key").exit_code == 0
    assert "(shared)" in ready("user", "show", "clerk").output
    removed = ready("user", "remove-key", "lee", fingerprint)
    assert removed.output.strip() == f"removed ssh-ed25519 {fingerprint} from lee"
    unlocked = ready("user", "unlock", "lee")
    assert "was not locked" in unlocked.output
    assert ready("partner", "disable", "uni", "--yes").exit_code == 0
    assert ready("partner", "enable", "uni").output.strip() == "enabled partner uni"
    tags = _tags(ready.data_dir)
    for expected in [("account:disable", "account:lee"), ("account:enable", "account:lee"),
                     ("account:allow-from", "account:lee"), ("account:key:add", "account:clerk"),
                     ("account:key:remove", "account:lee"), ("account:unlock", "account:lee"),
                     ("partner:enable", "partner:uni")]:
        assert expected in tags
    assert ready("audit", "verify").exit_code == 0


def test_enrolment_by_ssh_shows_no_secret(ready, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    added = ready("user", "add", "lee", "--role", "partner", "--partner", "uni",
                  "--ssh-key", str(_ssh_key(tmp_path)), "--enrol-by-ssh")
    assert added.exit_code == 0, added.output
    assert "otpauth://" not in added.output
    assert "enrols their one-time codes at their first SFTP sign-in" in added.output
    assert "enrol by SSH until" in ready("user", "list").output
    reset = json.loads(ready("user", "reset-totp", "lee", "--json").output)
    assert reset["totp_uri"].startswith("otpauth://") and reset["enrol_until"] is None
    reopened = ready("user", "reset-totp", "lee", "--enrol-by-ssh")
    assert "otpauth://" not in reopened.output
    refused = ready("user", "add", "ops", "--role", "admin", "--enrol-by-ssh")
    assert refused.exit_code == 2 and "--enrol-by-ssh is for staff and partner" in refused.output


def test_machine_account_commands(ready, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice, bob = ready.secrets["alice"], ready.secrets["bob"]
    key_file = _ssh_key(tmp_path)
    alone = ready("user", "add", "nightly", "--role", "staff", "--machine", "--allow-from",
                  "10.20.0.0/24", "--ssh-key", str(key_file))
    assert alone.exit_code == 2 and "--machine needs --by ADMIN" in alone.output
    proposed = ready("user", "add", "nightly", "--role", "staff", "--machine", "--allow-from",
                     "10.20.0.0/24", "--ssh-key", str(key_file), "--by", "alice",
                     stdin=code(alice, 0))
    assert proposed.exit_code == 0, proposed.output
    assert "blindpost user approve 1 --by NAME" in proposed.output
    assert "nightly" in ready("user", "pending").output
    same = ready("user", "approve", "1", "--by", "alice", stdin=code(alice, 1))
    assert same.exit_code == 1 and "two-person rule" in same.output
    approved = ready("user", "approve", "1", "--by", "bob", stdin=code(bob, 0))
    assert approved.exit_code == 0, approved.output
    shown = ready("user", "show", "nightly").output
    assert "none (machine: key alone)" in shown and "10.20.0.0/24" in shown
    widen = ready("user", "set", "nightly", "--allow-from", "10.20.0.0/16")
    assert widen.exit_code == 1 and "may not machine propose" in widen.output
    narrowed = ready("user", "set", "nightly", "--allow-from", "10.20.0.0/25")
    assert narrowed.exit_code == 0
    tags = _tags(ready.data_dir)
    assert ("account:machine:propose", "account:nightly") in tags
    assert ("account:machine:approve", "account:nightly") in tags
    assert ready("audit", "verify").exit_code == 0


def test_source_commands(ready) -> None:  # type: ignore[no-untyped-def]
    assert ready("source", "list").output.strip() == "ADDRESS  FAILURES  HELD BACK UNTIL"
    lifted = ready("source", "unblock", "192.0.2.44")
    assert lifted.output.strip() == "192.0.2.44 was not held back; its 0 failures are forgotten"
    assert ("source:unblock", "source:192.0.2.44") in _tags(ready.data_dir)
    bad = ready("source", "unblock", "somewhere")
    assert bad.exit_code == 2 and "invalid address" in bad.output


def test_host_key_names_the_public_host(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    named = json.loads(run("host-key", "--host", "sftp.example.org", "--json").output)
    assert named["known_hosts"].startswith("[sftp.example.org]:2222 ssh-ed25519 ")
    standard = json.loads(run("host-key", "--host", "sftp.example.org:22", "--json").output)
    assert standard["known_hosts"].startswith("sftp.example.org ssh-ed25519 ")
    (run.data_dir / "blindpost.toml").write_text('sftp_listen = "0.0.0.0:2222"\n')
    guessed = run("host-key")
    assert "0.0.0.0" not in guessed.output
    assert "give --host with the name partners use" in guessed.output


def test_serve_help_and_the_systemd_unit_agree() -> None:
    unit = (Path(__file__).parents[4] / "deploy/systemd/blindpost.service").read_text()
    assert "ExecStart=/opt/blindpost/current/bin/blindpost serve" in unit
    assert "SFTP server, console\n# and purger in one service" in unit
    shown = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    assert "the SFTP server, the console and the purger" in shown


def test_authority_changes_take_two_admins(ready, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 20 on the CLI: the operator alone is refused, one admin proposes, the same admin
    cannot approve, a second admin approves and alone sees the one-time password."""
    alice, bob = ready.secrets["alice"], ready.secrets["bob"]
    alone = ready("user", "add", "carol", "--role", "admin")
    assert alone.exit_code == 1 and "the local operator does not act alone" in alone.output
    proposed = ready("user", "add", "carol", "--role", "admin", "--by", "alice",
                     stdin=code(alice, 0))
    assert proposed.exit_code == 0, proposed.output
    assert "proposed (change 1): create admin account carol" in proposed.output
    assert "password" not in proposed.output.lower()
    listed = [u["username"] for u in json.loads(ready("user", "list", "--json").output)]
    assert "carol" not in listed
    pending = ready("user", "pending")
    assert "change 1" in pending.output and "alice" in pending.output
    own = ready("user", "approve-change", "1", "--by", "alice", stdin=code(alice, 1))
    assert own.exit_code == 1 and "different admin" in own.output
    done = ready("user", "approve-change", "1", "--by", "bob", stdin=code(bob, 0))
    assert done.exit_code == 0, done.output
    assert "One-time password for carol (shown once, to you alone): " in done.output
    assert "otpauth://" not in done.output
    event = json.loads(ready("audit", "log", "--tag", "authority:approve",
                             "--json").output.splitlines()[-1])
    assert event["actor"] == "bob"
    assert (event["details"]["proposed_by"], event["details"]["approved_by"]) == ("alice", "bob")
    # The other authority changes: never the operator alone, proposed --by an admin.
    key_file = _ssh_key(tmp_path)
    for args in (["user", "reset-totp", "alice"], ["user", "add-key", "alice", str(key_file)],
                 ["token", "create", "deploy", "--role", "admin"]):
        refused = ready(*args)
        assert refused.exit_code == 1 and "does not act alone" in refused.output, args
    token = ready("token", "create", "deploy", "--role", "admin", "--by", "bob",
                  stdin=code(bob, 1))
    assert "proposed (change 2): create admin API token deploy" in token.output
    assert "bpt_" not in token.output
    withdrawn = ready("user", "withdraw-change", "2")
    assert withdrawn.output.strip() == "withdrew change 2: create admin API token deploy"
    assert "change 2" not in ready("user", "pending").output
    # carol has no code until her first console sign-in, and a --by says so.
    early = ready("user", "approve-change", "2", "--by", "carol", stdin="123456\n")
    assert early.exit_code == 1
    assert "carol has no one-time codes enrolled yet: they sign in to the console" in \
        early.output
    # alice and bob stay the two.
    starved = ready("user", "disable", "alice")
    assert starved.exit_code == 1 and "fewer than 2 active admins" in starved.output


def test_user_notify_turns_e_mail_on_and_off(ready) -> None:  # type: ignore[no-untyped-def]
    assert ready("user", "notify", "alice").output == "notifications for alice are off\n"
    # An admin's address is only mailed a code, which its holder types on their page
    # (tests/integration/test_notifications.py): without a relay, nothing is set.
    on = ready("user", "notify", "alice", "--email", "alice@registry.example")
    assert on.exit_code == 2 and "no code can be sent" in on.output
    shown = json.loads(ready("user", "notify", "alice", "--json").output)
    assert shown == {"username": "alice", "email": None}
    both = ready("user", "notify", "alice", "--email", "a@b.example", "--off")
    assert both.exit_code == 2 and "give one of --email ADDRESS, --off and --test" in both.output
    untested = ready("user", "notify", "alice", "--test")
    assert untested.exit_code == 2 and "no relay is configured" in untested.output
    bad = ready("user", "notify", "alice", "--email", "not an address")
    assert bad.exit_code == 2 and "plain e-mail address" in bad.output
    assert ready("user", "notify", "alice", "--off").output == (
        "notifications for alice were not on\n")


def test_agreement_commands_take_two_admins(ready) -> None:  # type: ignore[no-untyped-def]
    """Issue 24 on the CLI: one admin proposes an agreement, another approves it."""
    alice, bob = ready.secrets["alice"], ready.secrets["bob"]
    none = ready("agreement", "show", "uni")
    assert "uni has no data-sharing agreement: uploads are allowed" in none.output
    proposed = ready("agreement", "propose", "uni", "--columns", "HCN,Birth Date,postal_code",
                     "--alias", "pc=postal_code", "--max-records", "1000", "--by", "alice",
                     stdin=code(alice, 0))
    assert proposed.exit_code == 0, proposed.output
    assert ("proposed (change 1): set the data-sharing agreement of uni: columns birth_date, "
            "health_card_number, postal_code, max records 1000") in proposed.output
    assert ready("agreement", "show", "uni", "--json").output.count('"agreement": null') == 1
    own = ready("agreement", "approve", "1", "--by", "alice", stdin=code(alice, 1))
    assert own.exit_code == 1 and "different admin" in own.output
    done = ready("agreement", "approve", "1", "--by", "bob", stdin=code(bob, 0))
    assert done.exit_code == 0, done.output
    shown = json.loads(ready("agreement", "show", "uni", "--json").output)["agreement"]
    assert (shown["columns"], shown["aliases"], shown["max_records"], shown["allow_opaque"],
            shown["proposed_by"], shown["approved_by"]) == (
        ["birth_date", "health_card_number", "postal_code"], {"pc": "postal_code"}, 1000,
        False, "alice", "bob")
    assert "opaque files:  refused" in ready("agreement", "show", "uni").output


# -- issue 23: confirmations, passwords ------------------------------------------------

def test_a_disable_says_what_it_does_and_asks_first(  # type: ignore[no-untyped-def]
        ready, monkeypatch: pytest.MonkeyPatch) -> None:
    unasked = ready("partner", "disable", "uni")
    assert unasked.exit_code == 2, unasked.output
    assert "Disable partner uni: its people can no longer sign in" in unasked.output
    assert "no file is waiting for it" in unasked.output
    assert "needs confirming" in unasked.output and "add --yes" in unasked.output
    monkeypatch.setattr("gateway.cli.common.on_terminal", lambda: True)
    declined = ready("partner", "disable", "uni", stdin="n\n")
    assert declined.exit_code == 2 and "not confirmed" in declined.output
    assert json.loads(ready("partner", "list", "--json").output)[0]["disabled"] is False
    accepted = ready("partner", "disable", "uni", stdin="y\n")
    assert accepted.exit_code == 0 and "Go ahead?" in accepted.output
    assert "disabled partner uni" in accepted.output


def test_passwords_change_with_a_code_and_reset_by_two_admins(ready) -> None:  # type: ignore[no-untyped-def]
    alice, bob = ready.secrets["alice"], ready.secrets["bob"]
    proposed = ready("user", "reset-password", "alice", "--by", "bob", stdin=code(bob, 0))
    assert proposed.exit_code == 0, proposed.output
    assert "proposed (change 1): reset the password of alice (their second factor stays)" \
        in proposed.output
    # The holder approves their own password reset: the one-time password goes to them.
    applied = ready("user", "approve-change", "1", "--by", "alice", stdin=code(alice, 0))
    assert applied.exit_code == 0, applied.output
    one_time = applied.output.split("(shown once, to you alone): ")[1].split()[0]
    assert "their current one-time code, then chooses a new password" in applied.output
    changed = ready("user", "password", "alice",
                    stdin=f"{one_time}\nfresh horse battery staple\n{code(alice, 1)}")
    assert changed.exit_code == 0, changed.output
    wrong = ready("user", "password", "bob",
                  stdin=f"not it\nfresh horse battery staple\n{code(bob, 1)}")
    assert wrong.exit_code == 1 and "current password is wrong" in wrong.output
    tags = [e["tag"] for e in map(json.loads, ready("audit", "log", "--json")
                                  .output.splitlines())]
    assert "account:password:failure" in tags and "account:password:reset" in tags
    assert tags.count("account:password:change") == 1
