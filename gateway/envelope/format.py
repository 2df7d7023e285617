"""The age v1 header: strict parsing, canonical serialisation and the header MAC.

The parser accepts exactly the ABNF of c2sp.org/age and nothing else: every line ends
in LF, stanza bodies are canonical unpadded base64 wrapped at 64 columns and closed by
a shorter line, and the MAC line is ``--- `` plus 43 base64 characters. Anything else
is a :class:`HeaderError`, because a lenient parser makes the format malleable.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

# HMAC and the hashes come from cryptography, which the envelope loads anyway, rather
# than hashlib and hmac, whose OpenSSL binding (_hashlib) adds some 3 ms to the start
# of every `blindpost encrypt` or `decrypt`.
# (cryptography's constant_time module imports hmac too: HMAC.verify compares instead.)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.envelope.errors import HeaderError
from gateway.envelope.source import BufferedSource, LineTooLongError

VERSION_LINE = b"age-encryption.org/v1\n"
_VERSION_PREFIX = b"age-encryption.org/"
_STANZA_PREFIX = b"-> "
_MAC_PREFIX = b"---"
_COLUMNS = 64
_MAC_SIZE = 32
FILE_KEY_SIZE = 16

# Bounds that keep a hostile header from using unbounded memory. The longest real
# line is a mlkem768x25519 argument line (about 1,520 bytes).
_MAX_LINE = 8 * 1024
_MAX_STANZAS = 1024
_MAX_HEADER = 4 * 1024 * 1024

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def b64encode(data: bytes) -> str:
    """Encode ``data`` as standard base64 without ``=`` padding."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").decode("ascii")


def b64decode(text: str | bytes) -> bytes:
    """Decode canonical unpadded base64, raising :class:`HeaderError` otherwise."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if not _B64_ALPHABET.issuperset(raw) or len(raw) % 4 == 1:
        raise HeaderError("header contains invalid base64")
    data = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
    # Unused low bits in the last character make several encodings of one value;
    # re-encoding and comparing rejects all but the canonical one.
    if b64encode(data).encode("ascii") != raw:
        raise HeaderError("header contains non-canonical base64")
    return data


class Stanza(NamedTuple):
    """One recipient stanza: its arguments (the first names its type) and body."""

    args: tuple[str, ...]
    body: bytes

    @property
    def type(self) -> str:
        """The stanza type, i.e. its first argument."""
        return self.args[0]

    def encode(self) -> bytes:
        """Serialise the stanza: argument line, then the body wrapped at 64 columns."""
        text = b64encode(self.body)
        lines = [text[i : i + _COLUMNS] for i in range(0, len(text), _COLUMNS)]
        if not lines or len(lines[-1]) == _COLUMNS:
            lines.append("")  # A body always ends with a line shorter than 64.
        return ("-> " + " ".join(self.args) + "\n" + "\n".join(lines) + "\n").encode("ascii")


class Header(NamedTuple):
    """A parsed header: its stanzas, its MAC and the exact bytes the MAC covers."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    """HMAC-SHA-256 of the header up to ``---``, keyed from the file key."""
    return _header_hmac(file_key, mac_input).finalize()


def _header_hmac(file_key: bytes, mac_input: bytes) -> hmac.HMAC:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"header").derive(file_key)
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(mac_input)
    return mac


def verify_header_mac(header: Header, file_key: bytes) -> bool:
    """Return whether the header MAC matches, comparing in constant time."""
    try:
        _header_hmac(file_key, header.mac_input).verify(header.mac)
    except InvalidSignature:
        return False
    return True


def encode_header(stanzas: list[Stanza], file_key: bytes) -> bytes:
    """Serialise a header for ``stanzas`` and authenticate it with ``file_key``."""
    mac_input = VERSION_LINE + b"".join(s.encode() for s in stanzas) + _MAC_PREFIX
    mac = header_mac(file_key, mac_input)
    return mac_input + b" " + b64encode(mac).encode("ascii") + b"\n"


def parse_header(source: BufferedSource) -> Header:
    """Read and strictly parse a v1 header, leaving ``source`` at the payload."""
    reader = _LineReader(source)
    version = reader.line()
    if version != VERSION_LINE[:-1]:
        if version.startswith(_VERSION_PREFIX):
            raise HeaderError("unsupported age format version")
        raise HeaderError("not an age file")
    stanzas: list[Stanza] = []
    while True:
        line = reader.line()
        if line.startswith(_STANZA_PREFIX):
            if len(stanzas) == _MAX_STANZAS:
                raise HeaderError("header has too many stanzas")
            stanzas.append(Stanza(_parse_args(line), _read_body(reader)))
        elif line.startswith(_MAC_PREFIX) and stanzas:
            return Header(tuple(stanzas), _parse_mac(line), reader.consumed + _MAC_PREFIX)
        else:
            raise HeaderError("malformed header line")


class _LineReader:
    """Reads header lines and keeps them, since the MAC covers their exact bytes."""

    def __init__(self, source: BufferedSource) -> None:
        self._source = source
        self._lines: list[bytes] = []
        self._size = 0

    def line(self) -> bytes:
        """Return the next line without its LF; a missing LF is a header error."""
        try:
            line = self._source.readline(_MAX_LINE)
        except LineTooLongError:
            raise HeaderError("header line is too long") from None
        if not line.endswith(b"\n"):
            raise HeaderError("header is truncated")
        self._size += len(line)
        if self._size > _MAX_HEADER:
            raise HeaderError("header is too large")
        self._lines.append(line)
        return line[:-1]

    @property
    def consumed(self) -> bytes:
        """Every complete line read so far, except the last one (the MAC line)."""
        return b"".join(self._lines[:-1])


def _parse_args(line: bytes) -> tuple[str, ...]:
    args = line[len(_STANZA_PREFIX) :].split(b" ")
    for arg in args:
        # An argument is 1*VCHAR: printable ASCII without spaces, never empty.
        if not arg or min(arg) < 0x21 or max(arg) > 0x7E:
            raise HeaderError("malformed stanza argument")
    return tuple(arg.decode("ascii") for arg in args)


def _read_body(reader: _LineReader) -> bytes:
    lines: list[bytes] = []
    while True:
        line = reader.line()
        if len(line) > _COLUMNS:
            raise HeaderError("stanza body line is too long")
        lines.append(line)
        if len(line) < _COLUMNS:
            return b64decode(b"".join(lines))


def _parse_mac(line: bytes) -> bytes:
    if not line.startswith(b"--- "):
        raise HeaderError("malformed header MAC line")
    mac = b64decode(line[4:])
    if len(mac) != _MAC_SIZE:
        raise HeaderError("malformed header MAC line")
    return mac
