"""The gateway asks its witnesses: cosignatures stored, a witness down, a rewrite refused.

The witnesses are real :class:`WitnessServer` instances on ephemeral ports in this
process (the separate-process case is in tests/integration/test_witness_processes.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from gateway.actors import Actor
from gateway.app import App
from gateway.audit import AuditTag, NoteVerifier, VerificationError, verify_tlog_proof
from gateway.audit.cosignature import Cosigner, require_quorum
from gateway.audit.witnessing import cosignature_rows
from gateway.config import load_settings
from gateway.dashboard import Overview
from gateway.datadir import initialise
from gateway.metrics import AuditCollector
from gateway.witness.server import WitnessServer
from gateway.witness.service import Witness
from gateway.witness.state import WitnessState
from tests.conftest import FakeClock


class RunningWitness:
    """A witness on an ephemeral port; stop and start it again on the same port."""

    def __init__(self, directory: Path, name: str, log_key: NoteVerifier) -> None:
        self.cosigner = Cosigner(name, Ed25519PrivateKey.generate())
        self.service = Witness(cosigner=self.cosigner, logs={log_key.name: [log_key]},
                               state=WitnessState(directory))
        self.port = 0
        self.server: WitnessServer | None = None
        self.start()

    def start(self) -> None:
        self.server = WitnessServer(("127.0.0.1", self.port), self.service)
        self.port = self.server.port
        self.server.serve_in_thread()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def entry(self) -> str:
        return f"http://127.0.0.1:{self.port} {self.cosigner.verifier.key_string()}"


def _app(data_dir: Path, clock: FakeClock, witnesses: list[RunningWitness],
         quorum: int = 2) -> App:
    settings = load_settings(data_dir=data_dir, environ={}, overrides={
        "audit_witnesses": ", ".join(w.entry() for w in witnesses),
        "audit_witness_quorum": quorum, "audit_witness_timeout_seconds": 2})
    return App(settings, clock=clock)


@pytest.fixture
def witnesses(tmp_path: Path, app: App) -> Iterator[list[RunningWitness]]:
    started = [RunningWitness(tmp_path / f"w{n}", f"witness{n}.example/w", app.audit.verifier)
               for n in (1, 2)]
    yield started
    for witness in started:
        if witness.server is not None:
            witness.stop()


def _grow(app: App, count: int = 3) -> None:
    for number in range(count):
        with app.transaction() as session:
            app.audit.record(session, tag=AuditTag.SETTING_CHANGE, actor=Actor.system("t"),
                             subject=f"setting:{number}")
    with app.transaction() as session:
        app.audit.checkpoint(session)


def _dashboard(overview: Overview) -> str:
    """The console's dashboard page body for ``overview`` (the template alone)."""
    templates = Path(__file__).resolve().parents[3] / "admin_ui" / "templates"
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(templates),
                                     autoescape=True)
    return environment.get_template("dashboard.html").render(
        o=overview, csrf="", current=None, can=lambda _permission: False)


def _events(app: App, tag: AuditTag) -> list[dict[str, object]]:
    with app.read() as session:
        return [event.details for event in app.audit.events(session, tag=tag)]


def test_checkpoints_are_cosigned_by_every_witness(
        app: App, data_dir: Path, clock: FakeClock, witnesses: list[RunningWitness]) -> None:
    gateway = _app(data_dir, clock, witnesses)
    _grow(gateway)
    first = gateway.witnessing.cosign_latest()
    assert first is not None and first.met and first.cosigned == 2
    _grow(gateway, 5)
    assert gateway.witnessing.cosign_latest().met  # type: ignore[union-attr]
    note = gateway.audit_view.cosigned_checkpoint(Actor.local_operator())
    verifiers = [w.cosigner.verifier for w in witnesses]
    assert {c.witness for c in require_quorum(note, verifiers, 2, label="latest")} == {
        "witness1.example/w", "witness2.example/w"}
    with gateway.read() as session:
        assert len(session.execute(select(cosignature_rows)).all()) == 4
    # A proof carries the cosignatures, so a third party checks the entry alone.
    proof = gateway.audit_view.prove(Actor.local_operator(), 2)
    checkpoint, _ = verify_tlog_proof(proof, gateway.audit.verifier, witnesses=verifiers,
                                      quorum=2)
    assert checkpoint.size > 2
    with pytest.raises(VerificationError, match="1 of the 2"):
        verify_tlog_proof(proof.replace(proof.split("\n")[-2] + "\n", ""),
                          gateway.audit.verifier, witnesses=verifiers, quorum=2)
    # A fresh process (no remembered sizes) starts from the stored cosignatures.
    _grow(gateway)
    again = _app(data_dir, clock, witnesses)
    assert again.witnessing.cosign_latest().met  # type: ignore[union-attr]
    assert _events(gateway, AuditTag.AUDIT_WITNESS_QUORUM_MISSED) == []
    gateway.close()
    again.close()


def test_a_witness_down_misses_the_quorum_once_and_resumes(
        app: App, data_dir: Path, clock: FakeClock, witnesses: list[RunningWitness],
        caplog: pytest.LogCaptureFixture) -> None:
    gateway = _app(data_dir, clock, witnesses)
    _grow(gateway)
    gateway.witnessing.cosign_latest()
    witnesses[1].stop()
    _grow(gateway)
    missed = gateway.witnessing.cosign_latest()
    assert missed is not None and not missed.met and missed.cosigned == 1
    assert "unreachable" in missed.results[1].problem
    gateway.witnessing.cosign_latest()  # Still down: no second alarm for this checkpoint,
    other = _app(data_dir, clock, witnesses)  # nor from another service's process.
    other.witnessing.cosign_latest()
    other.close()
    alarms = _events(gateway, AuditTag.AUDIT_WITNESS_QUORUM_MISSED)
    assert len(alarms) == 1
    assert alarms[0]["missing"] == ["witness2.example/w"]
    assert any(r.levelname == "ERROR" and "1 of the 2" in r.getMessage() for r in caplog.records)
    metrics = {sample.name: sample.value for family in AuditCollector(gateway).collect()
               for sample in family.samples}
    assert metrics["blindpost_witness_quorum_missed_total"] == 1
    overview = gateway.dashboard.overview(Actor.local_operator())
    assert overview.witness_quorum_missed
    page = _dashboard(overview)
    assert "the latest checkpoint has 1 of the 2 cosignatures required" in page
    witnesses[1].start()
    _grow(gateway)
    back = gateway.witnessing.cosign_latest()
    assert back is not None and back.met
    overview = gateway.dashboard.overview(Actor.local_operator())
    assert "latest checkpoint cosigned by 2 (quorum 2)" in _dashboard(overview)
    gateway.close()


def test_a_truncated_and_a_forked_log_are_refused_and_reported(
        tmp_path: Path, app: App, data_dir: Path, clock: FakeClock,
        witnesses: list[RunningWitness]) -> None:
    gateway = _app(data_dir, clock, witnesses)
    _grow(gateway, 30)
    assert gateway.witnessing.cosign_latest().met  # type: ignore[union-attr]
    witnessed = gateway.witnessing.cosign_latest().checkpoint.checkpoint.size  # type: ignore[union-attr]
    gateway.close()
    # Someone with the host's keys starts the log again: a new database, the same keys.
    rewritten = tmp_path / "rewritten"
    initialise(rewritten, admin="root-admin", environ={})
    shutil.rmtree(rewritten / "keys")
    shutil.copytree(data_dir / "keys", rewritten / "keys")
    impostor = _app(rewritten, clock, witnesses)
    _grow(impostor, 1)
    truncated = impostor.witnessing.cosign_latest()
    assert truncated is not None and not truncated.met
    assert {(r.status, r.witness_size) for r in truncated.results} == {(409, witnessed)}
    refused = _events(impostor, AuditTag.AUDIT_WITNESS_REFUSED)
    assert [(e["witness"], e["size"], e["witness_size"]) for e in refused] == [
        (w.cosigner.name, truncated.checkpoint.checkpoint.size, witnessed) for w in witnesses]
    _grow(impostor, witnessed)  # Longer than what was witnessed, but another history.
    forked = impostor.witnessing.cosign_latest()
    assert forked is not None and {r.status for r in forked.results} == {422}
    assert all("rewritten or forked" in r.problem for r in forked.results)
    assert len(_events(impostor, AuditTag.AUDIT_WITNESS_REFUSED)) == 4
    impostor.close()
