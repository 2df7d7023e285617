"""Key generation, parsing, encodings and fingerprints."""

from __future__ import annotations

import re

import pytest

import gateway.envelope.mlkem
from gateway.envelope import (
    Identity,
    InvalidKeyError,
    RecipientError,
    UnsupportedError,
    bech32,
    check_recipients,
    generate_identity,
    parse_identities_file,
    parse_identity,
    parse_recipient,
    parse_recipients_file,
)

# Examples from the age specification (c2sp.org/age).
SPEC_X25519_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_X25519_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
SPEC_PQ_IDENTITY = "AGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR"
SPEC_PQ_RECIPIENT_START = "age1pq1x34nzsvr0rxjsgdn8zgyhfe8j7ceq5r9rdelkjuh3y235jzxshfg87pzf5zrqtz"
SPEC_PQ_RECIPIENT_END = "jtqmwze9pyyzk3tlhl53k2ykx3qheyty7saeq0d3fzv49zc0k"


def test_spec_x25519_identity_gives_spec_recipient() -> None:
    identity = parse_identity(SPEC_X25519_IDENTITY)
    assert str(identity.recipient) == SPEC_X25519_RECIPIENT
    assert identity.to_secret_string() == SPEC_X25519_IDENTITY


def test_spec_hybrid_identity_gives_spec_recipient() -> None:
    identity = parse_identity(SPEC_PQ_IDENTITY)
    recipient = str(identity.recipient)
    assert recipient.startswith(SPEC_PQ_RECIPIENT_START)
    assert recipient.endswith(SPEC_PQ_RECIPIENT_END)
    assert len(recipient) == 1959
    assert identity.to_secret_string() == SPEC_PQ_IDENTITY


@pytest.mark.parametrize(("post_quantum", "kind"), [(True, "mlkem768x25519"), (False, "x25519")])
def test_generate_and_parse_round_trip(post_quantum: bool, kind: str) -> None:
    identity = generate_identity(post_quantum=post_quantum)
    recipient = identity.recipient
    assert recipient.kind == identity.kind == kind
    assert recipient.is_post_quantum is post_quantum
    assert parse_recipient(str(recipient)) == recipient
    assert parse_identity(identity.to_secret_string()).recipient == recipient
    assert generate_identity(post_quantum=post_quantum).recipient != recipient


def test_default_is_post_quantum() -> None:
    assert generate_identity().recipient.is_post_quantum


def test_fingerprint_format() -> None:
    recipient = parse_recipient(SPEC_X25519_RECIPIENT)
    assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", recipient.fingerprint)
    assert recipient.fingerprint == parse_recipient(SPEC_X25519_RECIPIENT).fingerprint


def test_repr_never_shows_the_secret(identity: Identity) -> None:
    secret = identity.to_secret_string()
    assert secret not in repr(identity)
    assert secret[20:40] not in repr(identity)


@pytest.mark.parametrize(
    "text",
    [
        SPEC_X25519_RECIPIENT.upper(),
        SPEC_X25519_RECIPIENT[:-1] + "q",  # bad checksum
        SPEC_X25519_RECIPIENT[:10] + "B" + SPEC_X25519_RECIPIENT[11:],  # mixed case
        "age1" + SPEC_X25519_RECIPIENT[4:20],  # truncated
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t",
        bech32.encode("age", bytes(31)),  # wrong key length
        "",
    ],
)
def test_invalid_recipients(text: str) -> None:
    with pytest.raises(InvalidKeyError):
        parse_recipient(text)


@pytest.mark.parametrize(
    "text",
    [
        SPEC_X25519_IDENTITY.lower(),
        SPEC_X25519_IDENTITY[:-1] + "Q",
        SPEC_X25519_RECIPIENT,
        "AGE-PLUGIN-YUBIKEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
    ],
)
def test_invalid_identities(text: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        parse_identity(text)
    assert text not in str(info.value)


def test_identities_file_skips_comments_and_names_bad_line() -> None:
    text = f"# created: now\n# public key: {SPEC_X25519_RECIPIENT}\n\n{SPEC_X25519_IDENTITY}\n"
    [identity] = parse_identities_file(text)
    assert str(identity.recipient) == SPEC_X25519_RECIPIENT
    with pytest.raises(InvalidKeyError, match="line 2"):
        parse_identities_file(f"{SPEC_X25519_IDENTITY}\nAGE-SECRET-KEY-1NOPE\n")
    with pytest.raises(InvalidKeyError, match="no identity"):
        parse_identities_file("# only a comment\n")


def test_recipients_file() -> None:
    pq = generate_identity().recipient
    found = parse_recipients_file(f"# partner keys\n{pq}\n  {SPEC_X25519_RECIPIENT}  \n")
    assert [str(r) for r in found] == [str(pq), SPEC_X25519_RECIPIENT]


def test_mixing_post_quantum_and_classical_is_refused() -> None:
    pq = generate_identity(post_quantum=True).recipient
    classic = generate_identity(post_quantum=False).recipient
    with pytest.raises(RecipientError, match="post-quantum"):
        check_recipients([pq, classic])
    with pytest.raises(RecipientError):
        check_recipients([])
    check_recipients([pq, generate_identity().recipient])


def test_missing_ml_kem_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.asymmetric import mlkem

    def unsupported() -> None:
        raise mlkem.UnsupportedAlgorithm("ML-KEM is not supported by this backend")

    # The public API's own refusal, as an OpenSSL without ML-KEM gives it.
    monkeypatch.setattr(mlkem.MLKEM768PrivateKey, "generate", unsupported)
    monkeypatch.setattr("gateway.envelope.mlkem._mlkem_available",
                        gateway.envelope.mlkem._mlkem_available.__wrapped__)
    with pytest.raises(UnsupportedError, match="ML-KEM"):
        generate_identity(post_quantum=True)
    with pytest.raises(UnsupportedError):
        parse_identity(SPEC_PQ_IDENTITY)
    assert parse_identity(SPEC_X25519_IDENTITY).kind == "x25519"


def test_bech32_round_trip_any_length() -> None:
    for size in (0, 1, 32, 1216):
        data = bytes(range(256)) * 5
        text = bech32.encode("age1pq", data[:size])
        assert bech32.decode(text) == ("age1pq", data[:size])
        assert bech32.decode(text.upper()) == ("age1pq", data[:size])
