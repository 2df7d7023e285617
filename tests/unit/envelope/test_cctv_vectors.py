"""Conformance: every C2SP CCTV age vector from the pinned npm package ``cctv-age``.

Each vector names an expected outcome class and the SHA-256 of all plaintext an
implementation may release before failing. The vectors are read straight from the
package's ``index.js`` (each is a base64 string there), so no Node process is needed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.envelope import (
    ArmorError,
    DecryptionError,
    Decryptor,
    HeaderError,
    HeaderMACError,
    NoIdentityMatchError,
    PayloadError,
    parse_identity,
)

_REPO = Path(__file__).resolve().parents[3]
_VECTORS_JS = _REPO / "tests" / "node" / "node_modules" / "cctv-age" / "index.js"
_INSTALL_HINT = "run `npm ci --prefix tests/node` (part of `make test`) to install cctv-age@0.2.0"
_ENTRY = re.compile(r'^// \.\./testdata/(\S+)\nvar \w+ = __toBinary\("([A-Za-z0-9+/=]*)"\);$', re.M)
_EXPECTED_COUNT = 143

_OUTCOMES: dict[str, type[DecryptionError] | None] = {
    "success": None,
    "no match": NoIdentityMatchError,
    "HMAC failure": HeaderMACError,
    "header failure": HeaderError,
    "payload failure": PayloadError,
    "armor failure": ArmorError,
}

# With format detection instead of the vector's "armored: yes", text before the
# BEGIN line makes the input look like a (broken) binary file, not broken armor.
_DETECTED_DIFFERENTLY = {"armor_garbage_leading": HeaderError}


@dataclass
class Vector:
    """One parsed test vector."""

    expect: str
    body: bytes
    payload: str | None = None
    armored: bool = False
    identities: list[str] = field(default_factory=list)
    passphrases: list[str] = field(default_factory=list)


def _load() -> dict[str, bytes]:
    if not _VECTORS_JS.is_file():
        return {}
    return {name: base64.b64decode(data) for name, data in _ENTRY.findall(_VECTORS_JS.read_text())}


def _parse(raw: bytes) -> Vector:
    head, _, body = raw.partition(b"\n\n")
    fields = [line.split(": ", 1) for line in head.decode().splitlines()]
    values: dict[str, list[str]] = {}
    for key, value in fields:
        values.setdefault(key, []).append(value)
    if values.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return Vector(
        expect=values["expect"][0],
        body=body,
        payload=values.get("payload", [None])[0],
        armored=values.get("armored") == ["yes"],
        identities=values.get("identity", []),
        passphrases=values.get("passphrase", []),
    )


def _decrypt(vector: Vector, *, armored: bool | None) -> tuple[type[DecryptionError] | None, bytes]:
    """Decrypt as an application would, returning the outcome and released plaintext."""
    released: list[bytes] = []
    identities = [parse_identity(i) for i in vector.identities]
    try:
        with Decryptor(io.BytesIO(vector.body), identities, armored=armored) as decryptor:
            while chunk := decryptor.read(16 * 1024):
                released.append(chunk)
    except DecryptionError as exc:
        return type(exc), b"".join(released)
    return None, b"".join(released)


_VECTORS = _load()


def test_all_vectors_present() -> None:
    """The package is installed and holds the expected number of vectors."""
    assert _VECTORS, f"CCTV vectors not found at {_VECTORS_JS}: {_INSTALL_HINT}"
    assert len(_VECTORS) == _EXPECTED_COUNT


@pytest.mark.parametrize("name", sorted(_VECTORS) or ["cctv-age-not-installed"])
def test_vector(name: str) -> None:
    """The outcome class and released plaintext match the vector."""
    if not _VECTORS:
        pytest.fail(f"CCTV vectors not found at {_VECTORS_JS}: {_INSTALL_HINT}")
    vector = _parse(_VECTORS[name])
    outcome, released = _decrypt(vector, armored=vector.armored)
    if vector.passphrases:
        # scrypt (passphrase) identities are not supported: such files are
        # rejected before any plaintext, as unmatched or as malformed.
        assert outcome in (NoIdentityMatchError, HeaderError)
        assert released == b""
        return
    assert outcome is _OUTCOMES[vector.expect]
    if vector.payload is not None:
        assert hashlib.sha256(released).hexdigest() == vector.payload
    else:
        assert released == b""


@pytest.mark.parametrize("name", sorted(_VECTORS) or ["cctv-age-not-installed"])
def test_vector_with_format_detection(name: str) -> None:
    """Armor detection reaches the same outcome as the vector's ``armored`` flag."""
    if not _VECTORS:
        pytest.fail(f"CCTV vectors not found at {_VECTORS_JS}: {_INSTALL_HINT}")
    vector = _parse(_VECTORS[name])
    forced = _decrypt(vector, armored=vector.armored)
    detected = _decrypt(vector, armored=None)
    if name in _DETECTED_DIFFERENTLY:
        assert detected == (_DETECTED_DIFFERENTLY[name], b"")
    else:
        assert detected == forced
