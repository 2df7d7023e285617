"""Interoperability of the envelope with two other age implementations.

- Debian's ``age`` CLI (Go reference implementation; X25519 only in Debian's 1.1).
- The npm package ``age-encryption@0.3.1`` (typage) under Node, X25519 and hybrid
  post-quantum, through ``tests/node/interop.mjs``.

Both directions, binary and armored, at sizes around the 64 KiB chunk boundary.
A missing tool fails the test with the install step; it never skips.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.envelope import (
    Decryptor,
    Encryptor,
    Identity,
    decrypt_bytes,
    encrypt_bytes,
    generate_identity,
    parse_identities_file,
    parse_identity,
    parse_recipient,
)

pytestmark = pytest.mark.integration

_REPO = Path(__file__).resolve().parents[2]
_NODE_DIR = _REPO / "tests" / "node"
_SIZES = [0, 1, 65535, 65536, 65537, 10 * 1024 * 1024 + 1]
_NODE_SIZES = [0, 1, 65536, 65537, 1024 * 1024 + 1]


def _tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` not found: {hint}")
    return path


@pytest.fixture(scope="module")
def age() -> str:
    """Path of the age CLI."""
    _tool("age-keygen", "install it with `apt-get install age` (or `make test-deps`)")
    return _tool("age", "install it with `apt-get install age` (or `make test-deps`)")


@pytest.fixture(scope="module")
def age_key(age: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An identity file made by age-keygen."""
    path = tmp_path_factory.mktemp("age") / "key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return path


def _data(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", _SIZES)
def test_age_decrypts_blindpost(
    age: str, age_key: Path, tmp_path: Path, size: int, armor: bool
) -> None:
    [identity] = parse_identities_file(age_key.read_text())
    data = _data(size)
    sealed = tmp_path / "f.age"
    with sealed.open("wb") as sink, Encryptor(sink, [identity.recipient], armor=armor) as enc:
        enc.write(data)
    result = subprocess.run(
        [age, "-d", "-i", str(age_key), str(sealed)], capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", _SIZES)
def test_blindpost_decrypts_age(
    age: str, age_key: Path, tmp_path: Path, size: int, armor: bool
) -> None:
    [identity] = parse_identities_file(age_key.read_text())
    data = _data(size)
    args = [age, "-e", "-r", str(identity.recipient), *(["-a"] if armor else [])]
    sealed = subprocess.run(args, input=data, capture_output=True, check=True).stdout
    with Decryptor(io.BytesIO(sealed), [identity]) as decryptor:
        assert decryptor.read() == data


@pytest.mark.parametrize("size", _SIZES)
def test_encrypt_and_decrypt_o_in_ranges_interoperate_with_age(
    age: str, age_key: Path, tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`encrypt -o` / `decrypt -o` between files, in three ranges (gateway.client.ranges):
    age opens what they write, and they open what age writes."""
    from click.testing import CliRunner

    from gateway.cli import conversions
    from gateway.cli.program import main

    monkeypatch.setattr(conversions, "range_workers", lambda: 3)
    [identity] = parse_identities_file(age_key.read_text())
    plain = tmp_path / "plain"
    plain.write_bytes(_data(size))
    ours = tmp_path / "ours.age"
    result = CliRunner().invoke(main, ["encrypt", "-r", str(identity.recipient), "-o",
                                       str(ours), str(plain)])
    assert result.exit_code == 0, result.output
    opened = subprocess.run([age, "-d", "-i", str(age_key), str(ours)], capture_output=True,
                            check=True)
    assert opened.stdout == plain.read_bytes()
    theirs = tmp_path / "theirs.age"
    subprocess.run([age, "-e", "-r", str(identity.recipient), "-o", str(theirs), str(plain)],
                   check=True)
    back = tmp_path / "back"
    result = CliRunner().invoke(main, ["decrypt", "-i", str(age_key), "-o", str(back),
                                       str(theirs)])
    assert result.exit_code == 0, result.output
    assert back.read_bytes() == plain.read_bytes()


def test_age_rejects_truncated_blindpost_file(age: str, age_key: Path, tmp_path: Path) -> None:
    [identity] = parse_identities_file(age_key.read_text())
    sealed = encrypt_bytes(_data(3 * 65536), [identity.recipient])
    result = subprocess.run(
        [age, "-d", "-i", str(age_key)], input=sealed[:-65552], capture_output=True, check=False
    )
    assert result.returncode != 0


def test_cli_key_files_work_with_age(age: str, tmp_path: Path) -> None:
    """A ``blindpost keygen --classic`` file is an age identity file, and vice versa."""
    key = tmp_path / "k.txt"
    cli = [sys.executable, "-c", "from gateway.cli.crypto import keygen; keygen()"]
    subprocess.run([*cli, "--classic", "-o", str(key)], check=True, capture_output=True, cwd=_REPO)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(key)], capture_output=True, check=True, text=True
    )
    assert parse_identities_file(key.read_text())[0].recipient == parse_recipient(recipient.stdout)
    sealed = subprocess.run(
        [age, "-e", "-r", recipient.stdout.strip()], input=b"hi", capture_output=True, check=True
    ).stdout
    decrypted_by_cli = subprocess.run(
        [sys.executable, "-c", "from gateway.cli.crypto import decrypt; decrypt()", "-i", str(key)],
        input=sealed,
        capture_output=True,
        check=True,
        cwd=_REPO,
    )
    assert decrypted_by_cli.stdout == b"hi"


# --- age-encryption (typage) under Node -------------------------------------------------


@pytest.fixture(scope="module")
def node() -> list[str]:
    """The command prefix that runs tests/node/interop.mjs."""
    binary = _tool("node", "install Node.js 20+ (`apt-get install nodejs npm`)")
    if not (_NODE_DIR / "node_modules" / "age-encryption").is_dir():
        pytest.fail(
            "age-encryption not installed: run `npm ci --prefix tests/node` (or `make test`)"
        )
    return [binary, str(_NODE_DIR / "interop.mjs")]


def _node(node: list[str], *args: str, stdin: bytes = b"") -> bytes:
    result = subprocess.run([*node, *args], input=stdin, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.fixture(scope="module", params=["hybrid", "x25519"])
def node_identity(request: pytest.FixtureRequest, node: list[str]) -> Identity:
    """An identity generated by age-encryption, parsed by us."""
    identity, recipient = _node(node, "keygen", request.param).decode().split()
    parsed = parse_identity(identity)
    assert str(parsed.recipient) == recipient
    return parsed


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", _NODE_SIZES)
def test_node_decrypts_blindpost(
    node: list[str], node_identity: Identity, size: int, armor: bool
) -> None:
    data = _data(size)
    sealed = encrypt_bytes(data, [node_identity.recipient], armor=armor)
    assert _node(node, "decrypt", node_identity.to_secret_string(), stdin=sealed) == data


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", _NODE_SIZES)
def test_blindpost_decrypts_node(
    node: list[str], node_identity: Identity, size: int, armor: bool
) -> None:
    data = _data(size)
    args = ["encrypt", str(node_identity.recipient), *(["armor"] if armor else [])]
    sealed = _node(node, *args, stdin=data)
    assert decrypt_bytes(sealed, [node_identity]) == data


def test_node_reads_our_generated_hybrid_key(node: list[str]) -> None:
    identity = generate_identity(post_quantum=True)
    sealed = _node(node, "encrypt", str(identity.recipient), stdin=b"post-quantum")
    assert decrypt_bytes(sealed, [identity]) == b"post-quantum"
    ours = encrypt_bytes(b"both ways", [identity.recipient])
    assert _node(node, "decrypt", identity.to_secret_string(), stdin=ours) == b"both ways"
