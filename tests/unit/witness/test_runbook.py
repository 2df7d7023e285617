"""deploy/runbooks/run-a-witness.md as written: its `blindpost` lines and the systemd
unit's command parse, and its configuration example loads once given real keys."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gateway.audit.note import NoteVerifier
from gateway.witness.trust import load_config
from tests.unit.gateway.cli.test_readme import _parse

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
RUNBOOK = DEPLOY / "runbooks" / "run-a-witness.md"


def _blocks(kind: str) -> list[str]:
    # Its shell blocks are marked illustrative (deploy/runbooks/README.md): they set up a
    # partner's host; this test checks their `blindpost` lines instead.
    return re.findall(rf"```{kind}(?: illustrative)?\n(.*?)```", RUNBOOK.read_text(),
                      re.DOTALL)


def _commands() -> list[list[str]]:
    commands = []
    for block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "blindpost":
                commands.append(argv)
    return commands


def test_every_blindpost_line_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = _commands()
    assert {tuple(argv[1:3]) for argv in commands} >= {("witness", "keygen"),
                                                        ("audit", "verify")}
    for argv in commands:
        for word in argv:
            if word.endswith((".jsonl", ".txt")):
                (tmp_path / word).touch()
        _parse(argv[1:])


def test_the_unit_runs_what_the_runbook_says() -> None:
    unit = (DEPLOY / "systemd" / "blindpost-witness.service").read_text()
    command = re.search(r"^ExecStart=\S+/blindpost (.*)$", unit, re.MULTILINE)
    assert command
    _parse(shlex.split(command.group(1)))
    assert "blindpost witness serve --listen 127.0.0.1:7380 --state\n/var/lib/" \
        "blindpost-witness --config /etc/blindpost-witness/witness.toml" in RUNBOOK.read_text()


def test_the_configuration_example_loads(tmp_path: Path) -> None:
    (example,) = _blocks("toml")
    log_key = NoteVerifier("registry.example/blindpost", bytes(32)).key_string()
    config = tmp_path / "witness.toml"
    config.write_text(example.replace("registry.example/blindpost+1a2b3c4d+AR…", log_key))
    loaded = load_config(config)
    assert loaded.name == "witness.partner.example/w1"
    assert loaded.key_file == tmp_path / "witness.key"
    assert list(loaded.logs) == ["registry.example/blindpost"]
