"""A gateway and two witnesses, each its own process with its own key and state.

The witnesses run as `blindpost witness serve` in an interpreter that cannot import the
server extra (as on a partner's machine with `pip install blindpost`), set up as
deploy/runbooks/run-a-witness.md says. The gateway (`blindpost sftp`) sends them its
checkpoints on its timer and at stop. The test restarts a witness, takes one down and
brings it back, has the host's keys start a truncated and then a forked log, and checks
the refusals, the alarms, `audit verify --witness` (online and on an export, offline)
and a concurrent double submission.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.actors import Actor
from gateway.app import App
from gateway.audit import AuditTag
from gateway.audit.cosignature import CosignatureVerifier, require_quorum
from gateway.config import load_settings
from gateway.datadir import initialise
from tests.integration.gateway_process import VENV_BIN, wait_for
from tests.unit.gateway.cli.test_client_only_install import BLOCKER
from tests.unit.witness import independent

pytestmark = pytest.mark.integration
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
ORIGIN = "blindpost.local/audit"


class WitnessProcess:
    """`blindpost witness serve` from a client-only install, on a fixed or free port."""

    def __init__(self, root: Path, name: str, log_vkey: str) -> None:
        self.root = root
        root.mkdir()
        keygen = _client_only(root, "witness", "keygen", "--name", name, "-o", "witness.key")
        assert keygen.returncode == 0, keygen.stderr
        self.vkey = keygen.stdout.strip()
        (root / "witness.toml").write_text(f'name = "{name}"\nkey_file = "witness.key"\n'
                                           f'[[log]]\nvkey = "{log_vkey}"\n')
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", BLOCKER, "witness", "serve", "--listen",
             f"127.0.0.1:{self.port}", "--state", str(self.root / "state"), "--config",
             str(self.root / "witness.toml")],
            cwd=self.root, env={"PATH": "/usr/bin:/bin", "HOME": str(self.root)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = LISTENING.search(line)
        assert match, line + self.process.stdout.read()
        self.port = int(match.group(1))
        self.output: list[str] = []
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.output.extend(process.stdout)
        process.stdout.close()

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(20) == 0
        self.process = None

    def entry(self) -> str:
        return f"http://127.0.0.1:{self.port} {self.vkey}"

    def latest_size(self, origin: str = ORIGIN) -> int | None:
        """The size of the latest checkpoint it serves for a log (the gateway's)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", f"/{hashlib.sha256(origin.encode()).hexdigest()}"
                               "/checkpoint")
            response = connection.getresponse()
            body = response.read().decode()
        finally:
            connection.close()
        return int(body.split("\n")[1]) if response.status == 200 else None


def _client_only(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def _blindpost(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")}
    env["BLINDPOST_DATA_DIR"] = str(data_dir)
    return subprocess.run([str(VENV_BIN / "blindpost"), *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


class Gateway:
    """`blindpost sftp` over ``data_dir``, its output collected."""

    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")}
        env["BLINDPOST_DATA_DIR"] = str(data_dir)
        self.process = subprocess.Popen(
            [str(VENV_BIN / "blindpost"), "sftp", "--listen", "127.0.0.1:0", "--workers", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        wait_for(lambda: "listening on" in self.output or self.process.poll() is not None,
                 60, "gateway start-up")
        assert self.process.poll() is None, self.output

    def _drain(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)
        self.process.stdout.close()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        assert self.process.wait(60) == 0, self.output


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    target = tmp_path / "var"
    initialise(target, admin="root-admin", environ={})
    return target


@pytest.fixture
def log_vkey(data_dir: Path) -> str:
    """What `blindpost audit key` prints (the runbook's step 3)."""
    app = App(load_settings(data_dir=data_dir, environ={}))
    try:
        return app.audit.verifier.key_string()
    finally:
        app.close()


@pytest.fixture
def witnesses(tmp_path: Path, log_vkey: str) -> Iterator[list[WitnessProcess]]:
    started = [WitnessProcess(tmp_path / f"w{n}", f"witness{n}.partner.example/w", log_vkey)
               for n in (1, 2)]
    yield started
    for witness in started:
        if witness.process is not None:
            witness.process.kill()
            witness.process.wait(10)


def _configure(data_dir: Path, witnesses: list[WitnessProcess]) -> None:
    entries = ", ".join(f'"{w.entry()}"' for w in witnesses)
    with (data_dir / "blindpost.toml").open("a") as config:
        config.write(f"audit_witnesses = [{entries}]\naudit_witness_quorum = 2\n"
                     "audit_checkpoint_seconds = 1\naudit_witness_timeout_seconds = 2\n")


def _latest_checkpoint_size(data_dir: Path) -> int:
    app = App(load_settings(data_dir=data_dir, environ={}))
    try:
        with app.read() as session:
            latest = app.audit.latest_checkpoint(session)
            return latest.checkpoint.size if latest else 0
    finally:
        app.close()


def _events(data_dir: Path, tag: AuditTag) -> int:
    app = App(load_settings(data_dir=data_dir, environ={}))
    try:
        with app.read() as session:
            return sum(1 for _ in app.audit.events(session, tag=tag))
    finally:
        app.close()


def _append(data_dir: Path, count: int = 1) -> None:
    """Entries appended as the gateway would (another process on the same database)."""
    app = App(load_settings(data_dir=data_dir, environ={}))
    try:
        with app.transaction() as session:
            for number in range(count):
                app.audit.record(session, tag=AuditTag.SETTING_CHANGE,
                                 actor=Actor.system("test"), subject=f"setting:{number}")
    finally:
        app.close()


def test_a_gateway_with_two_witnesses(tmp_path: Path, data_dir: Path, log_vkey: str,
                                      witnesses: list[WitnessProcess]) -> None:
    _configure(data_dir, witnesses)
    keys = [arg for w in witnesses for arg in ("--witness", w.vkey)]
    verifiers = [CosignatureVerifier.from_key_string(w.vkey) for w in witnesses]
    gateway = Gateway(data_dir)
    try:
        # Cosigned on the timer.
        wait_for(lambda: all(w.latest_size() for w in witnesses), 20, "first cosignatures")
        printed = _blindpost(data_dir, "audit", "checkpoint")
        assert printed.returncode == 0, printed.stderr
        assert len(require_quorum(printed.stdout, verifiers, 2, label="printed")) == 2

        # A witness restarts: its state is still there, and it goes on cosigning.
        before = witnesses[1].latest_size()
        witnesses[1].stop()
        witnesses[1].start()
        assert witnesses[1].latest_size() == before
        _append(data_dir)
        wait_for(lambda: witnesses[1].latest_size() == _latest_checkpoint_size(data_dir)
                 > (before or 0), 20, "cosigned after the restart")

        # A witness down: the quorum is missed, the alarm raised; it resumes when back.
        witnesses[1].stop()
        _append(data_dir)
        wait_for(lambda: _events(data_dir, AuditTag.AUDIT_WITNESS_QUORUM_MISSED) > 0, 20,
                 "quorum alarm")
        assert "1 of the 2 witness cosignatures required" in gateway.output
        failed = _blindpost(data_dir, "audit", "verify", *keys)
        assert failed.returncode == 1
        assert "no valid cosignature from witness witness2.partner.example/w" in failed.stderr
        witnesses[1].start()
        wait_for(lambda: witnesses[1].latest_size() == _latest_checkpoint_size(data_dir), 20,
                 "cosigned after the witness came back")
    finally:
        gateway.stop()
    # At stop, a last checkpoint, cosigned by both.
    final = _latest_checkpoint_size(data_dir)
    assert [w.latest_size() for w in witnesses] == [final, final]
    verified = _blindpost(data_dir, "audit", "verify", *keys, "--quorum", "2")
    assert verified.returncode == 0, verified.stderr
    assert "witness quorum met" in verified.stdout

    # Offline: an export, the cosigned checkpoint and the witnesses' keys.
    checkpoint = tmp_path / "checkpoint.txt"
    export = tmp_path / "audit.jsonl"
    app = App(load_settings(data_dir=data_dir, environ={}))
    checkpoint.write_text(app.audit_view.cosigned_checkpoint(Actor.local_operator()))
    with export.open("wb") as handle:
        app.audit_view.export(Actor.local_operator(), handle)
    app.close()
    offline = _blindpost(tmp_path, "audit", "verify", "--export", str(export), "--key",
                         log_vkey, "--checkpoint", str(checkpoint), *keys)
    assert offline.returncode == 0, offline.stderr
    assert "cosigned by witness1.partner.example/w, witness2.partner.example/w" in offline.stdout

    # Someone with the host's keys empties the log and starts again: truncated.
    witnessed = witnesses[0].latest_size()
    for leftover in data_dir.glob("blindpost.db*"):
        leftover.unlink()
    (data_dir / "audit-checkpoint.txt").unlink()
    # The host's own memory of the log goes too (root can remove it; left in place, it
    # would refuse the emptied database before any witness is asked).
    (data_dir / "state-snapshot.json").unlink(missing_ok=True)
    initialise(data_dir, admin=None, force=True, environ={})  # `blindpost init --force`
    truncated = _blindpost(data_dir, "audit", "checkpoint")
    assert "AUDIT LOG REWRITE: witness witness1.partner.example/w refused" in truncated.stderr
    assert f"cosigned a checkpoint of {witnessed} entries" in truncated.stderr
    assert _events(data_dir, AuditTag.AUDIT_WITNESS_REFUSED) == 2
    refused = _blindpost(data_dir, "audit", "verify", *keys)
    assert refused.returncode == 1
    assert (f"witness witness1.partner.example/w's latest checkpoint (size {witnessed}): it "
            f"covers {witnessed} entries but the log holds only") in refused.stderr

    # ... and then grows it past what was witnessed: a fork.
    _append(data_dir, witnessed)
    app = App(load_settings(data_dir=data_dir, environ={}))
    with app.transaction() as session:
        app.audit.checkpoint(session)
    outcome = app.witnessing.cosign_latest()
    app.close()
    assert outcome is not None and {r.status for r in outcome.results} == {422}
    forked = _blindpost(data_dir, "audit", "verify", *keys)
    assert forked.returncode == 1
    assert f"witness witness2.partner.example/w's latest checkpoint (size {witnessed}): its " \
           "root does not match" in forked.stderr
    assert all((w.root / "state" / "evidence").is_dir() for w in witnesses)


def test_concurrent_double_submission_to_a_witness_process(tmp_path: Path) -> None:
    log = IndependentLog()
    witness = WitnessProcess(tmp_path / "w", "witness.partner.example/w", log.vkey)
    try:
        assert _post(witness.port, log.request(0, 4))[0] == 200
        bodies = [log.request(4, size) for size in (9, 30, 9, 30, 17, 30)]
        statuses: list[int] = []
        barrier = threading.Barrier(len(bodies))

        def submit(body: bytes) -> None:
            barrier.wait()
            statuses.append(_post(witness.port, body)[0])

        threads = [threading.Thread(target=submit, args=(body,)) for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200] + [409] * (len(bodies) - 1)
        winner = witness.latest_size(log.origin)
        assert winner in (9, 17, 30)
        witness.stop()
        witness.start()
        status, body = _post(witness.port, log.request(4, 9))
        assert (status, body) == (409, f"{winner}\n".encode())
    finally:
        if witness.process is not None:
            witness.stop()


class IndependentLog:
    """Another log, built with the independent implementation of the formats."""

    def __init__(self) -> None:
        self.origin = "other-registry.example/log"
        self.key = Ed25519PrivateKey.generate()
        self.public = self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw)
        self.vkey = independent.vkey(self.origin, 1, self.public)
        self.leaves = [f"leaf {n}".encode() for n in range(30)]

    def request(self, old: int, size: int) -> bytes:
        text = independent.checkpoint_text(self.origin, size, independent.mth(self.leaves[:size]))
        note = independent.sign_note(text, self.origin, self.key, self.public)
        proof = independent.consistency(old, self.leaves[:size]) if old else []
        return independent.request(old, proof, note)


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/add-checkpoint", body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
