"""The ``keygen``, ``encrypt`` and ``decrypt`` commands, driven through click."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from gateway.cli import conversions
from gateway.cli.crypto import decrypt, encrypt, keygen
from gateway.cli.program import main
from gateway.envelope import parse_identities_file


def _run(command: click.Command, args: list[str], stdin: bytes | None = None) -> Result:
    # Through the top-level group, whose one error handler sets messages and exit codes.
    assert command.name is not None
    return CliRunner().invoke(main, [command.name, *args], input=stdin)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "partner.key"
    result = _run(keygen, ["-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def _recipient(key_file: Path) -> str:
    return str(parse_identities_file(key_file.read_text())[0].recipient)


def test_keygen_writes_a_private_age_keygen_style_file(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    lines = key_file.read_text().splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[1].startswith("# public key: age1pq1")
    assert lines[2].startswith("AGE-SECRET-KEY-PQ-1")


def test_keygen_prints_public_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = _run(keygen, ["--classic", "-o", str(path)])
    assert first.stderr.startswith("Public key: age1")
    assert "AGE-SECRET-KEY" not in first.output
    before = path.read_bytes()
    again = _run(keygen, ["-o", str(path)])
    assert again.exit_code == 1
    assert (
        again.stderr
        == f"blindpost: error: {path} already exists; refusing to overwrite a key file\n"
    )
    assert path.read_bytes() == before


def test_keygen_to_stdout() -> None:
    result = _run(keygen, ["--classic"])
    assert result.exit_code == 0
    [identity] = parse_identities_file(result.stdout)
    assert identity.kind == "x25519"


@pytest.fixture(params=[False, True], ids=["one-thread", "writer-thread"])
def spare_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run -o both ways: in one thread (a busy machine) and with the writer thread."""
    monkeypatch.setattr(conversions, "spare_core", lambda: request.param)
    return bool(request.param)


@pytest.mark.parametrize("armor", [[], ["-a"]])
def test_file_round_trip(tmp_path: Path, key_file: Path, armor: list[str],
                         spare_core: bool) -> None:
    plain = tmp_path / "extract.csv"
    # Larger than the writer's ring (8 slots of 512 KiB), so that it wraps.
    plain.write_bytes(os.urandom((5 << 20) + 12_345 if spare_core else 300_000))
    sealed = tmp_path / "extract.csv.age"
    result = _run(encrypt, ["-r", _recipient(key_file), *armor, "-o", str(sealed), str(plain)])
    assert result.exit_code == 0, result.output
    assert sealed.read_bytes().startswith(b"-----BEGIN" if armor else b"age-encryption.org/v1\n")
    out = tmp_path / "out.csv"
    result = _run(decrypt, ["-i", str(key_file), "-o", str(out), str(sealed)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == plain.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_stdin_to_stdout_with_recipients_file(tmp_path: Path, key_file: Path) -> None:
    recipients = tmp_path / "partner.recipients"
    recipients.write_text(f"# partner\n{_recipient(key_file)}\n")
    sealed = _run(encrypt, ["-R", str(recipients), "-a"], stdin=b"hello")
    assert sealed.exit_code == 0
    opened = _run(decrypt, ["-i", str(key_file)], stdin=sealed.stdout_bytes)
    assert opened.exit_code == 0
    assert opened.stdout_bytes == b"hello"


def test_failed_decryption_leaves_no_output(tmp_path: Path, key_file: Path,
                                            spare_core: bool) -> None:
    sealed = tmp_path / "f.age"
    _run(encrypt, ["-r", _recipient(key_file), "-o", str(sealed), "-"],
         stdin=os.urandom(3 << 20 if spare_core else 200_000))
    sealed.write_bytes(sealed.read_bytes()[:-10])
    out = tmp_path / "out"
    result = _run(decrypt, ["-i", str(key_file), "-o", str(out), str(sealed)])
    assert result.exit_code == 1
    assert result.stderr == "blindpost: error: payload is damaged or truncated\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.age", "partner.key"]


def test_wrong_key_is_one_clear_line(tmp_path: Path, key_file: Path) -> None:
    other = tmp_path / "other.key"
    _run(keygen, ["-o", str(other)])
    sealed = _run(encrypt, ["-r", _recipient(other)], stdin=b"x").stdout_bytes
    result = _run(decrypt, ["-i", str(key_file)], stdin=sealed)
    assert result.exit_code == 1
    assert result.stderr == "blindpost: error: no identity matched any of the file's recipients\n"


def test_usage_errors_exit_2(key_file: Path) -> None:
    classic = _run(keygen, ["--classic"]).stdout.splitlines()[1].removeprefix("# public key: ")
    assert _run(encrypt, [], stdin=b"x").exit_code == 2
    mixed = _run(encrypt, ["-r", _recipient(key_file), "-r", classic], stdin=b"x")
    assert mixed.exit_code == 2
    assert "post-quantum and classical" in mixed.stderr
    assert _run(encrypt, ["-r", "age1bogus"], stdin=b"x").exit_code == 2
    assert _run(decrypt, [], stdin=b"x").exit_code == 2


def test_garbage_identity_file_is_reported_by_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"\x98\x00 not a key\n")
    result = _run(decrypt, ["-i", str(bad)], stdin=b"x")
    assert result.stderr.startswith("blindpost: error: line 1: unsupported identity")


@pytest.mark.parametrize("command", [keygen, encrypt, decrypt])
def test_help_has_an_example(command: click.Command) -> None:
    result = _run(command, ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_keygen_shows_the_fingerprint_key_fingerprint_shows_again(tmp_path: Path) -> None:
    """The out-of-band check compares 50 characters, in the form `key propose` shows."""
    made = _run(keygen, ["-o", str(tmp_path / "p.key")])
    recipient = made.stderr.split("Public key: ")[1].split()[0]
    line = made.stderr.split("Fingerprint: ")[1].strip()
    parsed = parse_identities_file((tmp_path / "p.key").read_text())[0].recipient
    assert line == f"mlkem768x25519 {parsed.fingerprint}"
    assert _fingerprint(str(tmp_path / "p.key")).stdout == line + "\n"
    assert _fingerprint(recipient).stdout == line + "\n"
    (tmp_path / "list.txt").write_text(f"# the partner's keys\n{recipient}\n")
    assert _fingerprint(str(tmp_path / "list.txt")).stdout == line + "\n"


def _fingerprint(argument: str) -> Result:
    return CliRunner().invoke(main, ["key", "fingerprint", argument])


def test_key_fingerprint_refuses_what_is_not_a_key(tmp_path: Path) -> None:
    result = _fingerprint(str(tmp_path / "nothing"))
    assert result.exit_code == 2
    assert "neither a recipient (age1…) nor a file" in result.stderr
    (tmp_path / "junk").write_text("hello\n")
    junk = _fingerprint(str(tmp_path / "junk"))
    assert junk.exit_code == 2
    assert "line 1: unsupported recipient" in junk.stderr
