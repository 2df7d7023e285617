"""``blindpost audit …`` end to end on an initialised data directory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner, Result

from gateway.actors import Actor, ActorKind
from gateway.app import App
from gateway.audit import AuditTag, NoteVerifier, verify_tlog_proof
from gateway.audit.cosignature import CosignatureVerifier
from gateway.cli.program import main


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["audit", *args, "--data-dir", str(data_dir)])


def test_checkpoint_prove_and_verify(data_dir: Path, tmp_path: Path) -> None:
    key = run(data_dir, "key")
    assert key.exit_code == 0, key.output
    verifier = NoteVerifier.from_key_string(key.stdout.strip())
    assert verifier.name == "blindpost.local/audit"

    checkpoint = run(data_dir, "checkpoint")
    assert checkpoint.exit_code == 0, checkpoint.output
    witnessed = tmp_path / "witness.txt"
    witnessed.write_text(checkpoint.stdout)

    created = json.loads(run(data_dir, "log", "--tag", "account:create", "--json").stdout)
    proof = run(data_dir, "prove", str(created["index"]))
    assert proof.exit_code == 0, proof.output
    _, leaf = verify_tlog_proof(proof.stdout, verifier)
    assert b'"tag":"account:create"' in leaf

    verified = run(data_dir, "verify", "--checkpoint", str(witnessed))
    assert verified.exit_code == 0, verified.output
    assert "1 outside checkpoints verified" in verified.stdout


def test_log_lists_and_filters(data_dir: Path) -> None:
    listing = run(data_dir, "log")
    assert listing.exit_code == 0, listing.output
    assert "account:create" in listing.stdout and "audit:checkpoint" in listing.stdout
    only = run(data_dir, "log", "--tag", "account:create", "--json")
    assert only.stdout.count("\n") == 1 and only.stdout.startswith('{"actor":')
    later = run(data_dir, "log", "--since", "2999-01-01T00:00")
    assert later.stdout == ""
    bad = run(data_dir, "log", "--since", "yesterday")
    assert bad.exit_code == 2 and "ISO 8601" in bad.stderr


def test_offline_export_verification(data_dir: Path, tmp_path: Path) -> None:
    key = run(data_dir, "key").stdout.strip()
    witnessed = tmp_path / "witness.txt"
    witnessed.write_text(run(data_dir, "checkpoint").stdout)
    export = tmp_path / "export.jsonl"
    exported = run(data_dir, "export", "-o", str(export))
    assert exported.exit_code == 0, exported.output
    assert (export.stat().st_mode & 0o777) == 0o600
    offline = CliRunner().invoke(main, ["audit", "verify", "--export", str(export), "--key", key,
                                         "--checkpoint", str(witnessed)])
    assert offline.exit_code == 0, offline.output
    export.write_bytes(export.read_bytes().replace(b"root-admin", b"evil-admin", 1))
    forged = CliRunner().invoke(main, ["audit", "verify", "--export", str(export), "--key", key,
                                        "--checkpoint", str(witnessed)])
    assert forged.exit_code == 1
    assert "outside checkpoint" in forged.stderr and "entries in [0," in forged.stderr
    missing_key = CliRunner().invoke(main, ["audit", "verify", "--export", str(export)])
    assert missing_key.exit_code == 1 and "--key" in missing_key.stderr


def test_verify_reports_a_changed_row(data_dir: Path) -> None:
    connection = sqlite3.connect(data_dir / "blindpost.db")
    with connection:
        connection.execute("DROP TRIGGER audit_entries_no_update")
        connection.execute("UPDATE audit_entries SET leaf = replace(leaf, '\"complete\":true', "
                           "'\"complete\":false') WHERE idx = 0")
    connection.close()
    result = run(data_dir, "verify")
    assert result.exit_code == 1
    assert "entry 0: its leaf hash differs" in result.stderr
    assert "stored checkpoint #1 (size 1): its root does not match" in result.stderr


def test_log_escapes_control_characters(data_dir: Path, app: App) -> None:
    """A name or subject with a newline cannot forge a line of ``audit log`` (issue 15)."""
    forged = "mallory\n       9  2026-11-02 09:00:00  key:approve              root-admin"
    with app.transaction() as session:
        app.audit.record(session, tag=AuditTag.LOGIN_FAILURE,
                         actor=Actor.anonymous(claimed="x", source="192.0.2.7"),
                         subject="account:x", details={"reason": "wrong code"})
        # Entries written by other paths or older versions may hold raw control
        # characters; the rendering must not trust them.
        app.audit.record(session, tag=AuditTag.LOGIN_FAILURE,
                         actor=Actor(ActorKind.ACCOUNT, forged), subject=f"account:{forged}\r",
                         details={"reason": "bidi \u202e and \x1b[31m escape"})
    lines = run(data_dir, "log", "--tag", "auth:login:failure").stdout.splitlines()
    assert len(lines) == 2
    assert "mallory\\n       9" in lines[1] and "\\r" in lines[1]
    assert "\\u202e" in lines[1] and "\\u001b[31m" in lines[1]
    assert all(ch.isprintable() for ch in lines[1])


def test_witness_options_are_checked(data_dir: Path) -> None:
    vkey = CosignatureVerifier("witness.example/w", bytes(32)).key_string()
    too_many = run(data_dir, "verify", "--witness", vkey, "--quorum", "2")
    assert too_many.exit_code == 2 and "more than the 1 --witness" in too_many.stderr
    alone = run(data_dir, "verify", "--quorum", "1")
    assert alone.exit_code == 2 and "needs --witness" in alone.stderr
    wrong = run(data_dir, "verify", "--witness", run(data_dir, "key").stdout.strip())
    assert wrong.exit_code == 1 and "signature type 0x04" in wrong.stderr
    # No witness ever cosigned this log: the quorum fails, naming the witness.
    missing = run(data_dir, "verify", "--witness", vkey)
    assert missing.exit_code == 1
    assert "no valid cosignature from witness witness.example/w" in missing.stderr
def test_verify_continues_from_its_last_result(data_dir: Path, app: App) -> None:
    first = run(data_dir, "verify")
    assert first.exit_code == 0, first.output
    assert "new since the last verification" not in first.stdout
    state = data_dir / "audit-verified.json"
    assert state.stat().st_mode & 0o777 == 0o600
    with app.transaction() as session:
        app.audit.record(session, tag=AuditTag.LOGIN_FAILURE,
                         actor=Actor.anonymous(claimed="x", source="192.0.2.7"),
                         subject="account:x", details={"reason": "wrong code"})
    again = run(data_dir, "verify")
    assert again.exit_code == 0, again.output
    assert "new since the last verification" in again.stdout
    full = run(data_dir, "verify", "--full")
    assert full.exit_code == 0, full.output
    assert "new since the last verification" not in full.stdout
    # A state the log does not extend (a restored database, say): all is verified again.
    kept = json.loads(state.read_text())
    state.write_text(json.dumps({**kept, "root": "00" * 32}))
    restarted = run(data_dir, "verify")
    assert restarted.exit_code == 0, restarted.output
    assert "new since the last verification" not in restarted.stdout
