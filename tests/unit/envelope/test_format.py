"""Header parsing and serialisation, canonical base64 and the header MAC."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import HeaderError
from gateway.envelope.format import (
    Header,
    Stanza,
    b64decode,
    b64encode,
    encode_header,
    parse_header,
    verify_header_mac,
)
from gateway.envelope.source import BufferedSource

FILE_KEY = bytes(range(16))


def _parse(data: bytes) -> tuple[Header, bytes]:
    source = BufferedSource(io.BytesIO(data))
    header = parse_header(source)
    return header, source.read_exact(1 << 20)


def test_b64_round_trip_without_padding() -> None:
    for size in range(10):
        data = os.urandom(size)
        text = b64encode(data)
        assert "=" not in text
        assert b64decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "AA==",  # padding is not allowed
        "AB",  # unused bits set: non-canonical form of "AA"
        "A",  # impossible length
        "AA A",  # whitespace
        "AA\n",
        "A-_A",  # URL-safe alphabet
        "é",
    ],
)
def test_b64_rejects_non_canonical(text: str) -> None:
    with pytest.raises(HeaderError):
        b64decode(text)


def test_stanza_body_of_48_bytes_ends_with_empty_line() -> None:
    encoded = Stanza(("X", "y"), bytes(48)).encode()
    assert encoded.endswith(b"A" * 64 + b"\n\n")


def test_header_round_trip_and_mac() -> None:
    stanzas = [Stanza(("X25519", "abc"), os.urandom(32)), Stanza(("grease", "!#$"), b"")]
    data = encode_header(stanzas, FILE_KEY) + b"payload"
    header, rest = _parse(data)
    assert header.stanzas == tuple(stanzas)
    assert verify_header_mac(header, FILE_KEY)
    assert not verify_header_mac(header, bytes(16))
    assert rest == b"payload"


_ARG = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(_ARG, min_size=1, max_size=4), st.binary(max_size=300)),
        min_size=1,
        max_size=4,
    )
)
def test_header_round_trip_property(raw: list[tuple[list[str], bytes]]) -> None:
    stanzas = [Stanza(tuple(args), body) for args, body in raw]
    header, _ = _parse(encode_header(stanzas, FILE_KEY))
    assert list(header.stanzas) == stanzas
    assert verify_header_mac(header, FILE_KEY)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.replace(b"v1\n", b"v2\n"),
        lambda h: h.replace(b"\n", b"\r\n"),
        lambda h: h.replace(b"-> X25519 abc", b"-> X25519  abc"),
        lambda h: h.replace(b"-> X25519 abc", b"->  X25519 abc"),
        lambda h: h.replace(b"--- ", b"---"),
        lambda h: h[: h.index(b"---")],  # no MAC line
        lambda h: h[:-1],  # MAC line without LF
        lambda h: h.replace(b"-> X25519 abc\n", b"-> X25519 abc\n" + b"A" * 65 + b"\n"),
    ],
)
def test_malformed_headers_are_rejected(mutate: Callable[[bytes], bytes]) -> None:
    header = encode_header([Stanza(("X25519", "abc"), bytes(32))], FILE_KEY)
    with pytest.raises(HeaderError):
        _parse(mutate(header))


def test_header_line_length_is_bounded() -> None:
    with pytest.raises(HeaderError):
        _parse(b"age-encryption.org/v1\n-> " + b"A" * 100_000 + b"\n")
