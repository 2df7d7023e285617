"""Bech32 (BIP 173) as age uses it: no length limit, one case, checksum over lowercase."""

from __future__ import annotations

from gateway.envelope.errors import InvalidKeyError

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & mask)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & mask)
    elif not pad and (bits >= from_bits or (acc << (to_bits - bits)) & mask):
        # Decoding: at most 4 bits of zero padding may be left over.
        raise InvalidKeyError("invalid key encoding: bad padding")
    return out


def encode(hrp: str, data: bytes, *, upper: bool = False) -> str:
    """Encode ``data`` under the human-readable part ``hrp``."""
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    check = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    values += [(check >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]
    text = hrp + "1" + "".join(_CHARSET[v] for v in values)
    return text.upper() if upper else text


def decode(text: str) -> tuple[str, bytes]:
    """Return ``(hrp, data)``, with ``hrp`` lowercased; raise :class:`InvalidKeyError`."""
    if text.lower() != text and text.upper() != text:
        raise InvalidKeyError("invalid key encoding: mixed case")
    lowered = text.lower()
    pos = lowered.rfind("1")
    if pos < 1 or len(lowered) - pos - 1 < _CHECKSUM_LEN:
        raise InvalidKeyError("invalid key encoding")
    hrp, rest = lowered[:pos], lowered[pos + 1 :]
    if any(not 33 <= ord(c) <= 126 for c in hrp) or any(c not in _VALUES for c in rest):
        raise InvalidKeyError("invalid key encoding: bad character")
    values = [_VALUES[c] for c in rest]
    if _polymod([*_hrp_expand(hrp), *values]) != 1:
        raise InvalidKeyError("invalid key encoding: bad checksum")
    return hrp, bytes(_convert_bits(values[:-_CHECKSUM_LEN], 5, 8, pad=False))
