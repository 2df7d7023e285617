"""What the gateway can check about an upload that already is age ciphertext, and what not.

age hides who a file is encrypted to: a stanza shows its type, never its recipient. So
for a pre-encrypted upload (``*.age``, e.g. from ``blindpost send``) the gateway checks
what the header shows: that it is a well-formed age header, that every stanza has the
type of the partner's approved keys (post-quantum or classical), and that there is one
stanza per approved key. A mismatch is refused with the reason. It cannot check that the
stanzas open with those keys, and the audit event says so: the file was "pre-encrypted by
the uploader", and the fingerprints it was encrypted to are recorded as the uploader's
client declared them (``declare-recipients@blindpost``), checked against the approved
keys, so that an exposure report can still name the keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway import envelope
from gateway.errors import PolicyError

PRE_ENCRYPTED = "pre-encrypted by the uploader"
# What was checked of a pre-encrypted payload (gateway.payload_check), as its upload event
# records it: events without it are from before every byte was checked (samples only).
PAYLOAD_CHECKED = "every byte screened, samples tested statistically; not decrypted"
ENCRYPTED_HERE = "encrypted by the gateway"
# rage adds a "grease" stanza of a random type ending in this suffix; no key opens it,
# so it exposes nothing and is not counted.
GREASE_SUFFIX = "-grease"


def _kinds(recipients: Sequence[envelope.Recipient]) -> str:
    return " and ".join(sorted({r.kind for r in recipients}))


def check_header(info: envelope.HeaderInfo, approved: Sequence[envelope.Recipient]) -> None:
    """Raise :class:`PolicyError` unless the header could be for exactly ``approved``."""
    stanzas = [t for t in info.stanza_types if not t.endswith(GREASE_SUFFIX)]
    wrong = sorted(set(stanzas) - {r.stanza_type for r in approved})
    if wrong:
        raise PolicyError(f"the file is encrypted with {', '.join(wrong)} stanzas, but the "
                          f"partner's approved keys are {_kinds(approved)}; encrypt to the "
                          "partner's published recipients (`blindpost send` does)")
    if len(stanzas) != len(approved):
        raise PolicyError(f"the file has {len(stanzas)} recipient stanzas, but the partner "
                          f"has {len(approved)} approved keys; encrypt to exactly the "
                          "partner's published recipients (`blindpost send` does)")


def check_declared(declared: Sequence[str], approved: Sequence[envelope.Recipient]) -> None:
    """Raise :class:`PolicyError` unless ``declared`` names exactly the approved keys."""
    expected = {r.fingerprint for r in approved}
    if len(set(declared)) != len(declared) or set(declared) != expected:
        unknown = sorted(set(declared) - expected)
        raise PolicyError("the client encrypted to keys that are not the partner's approved "
                          "keys (did they change since it fetched them?)"
                          + (f"; not approved: {', '.join(unknown)}" if unknown else ""))


def pre_encrypted_details(header: envelope.HeaderInfo | None, *, declared: Sequence[str] | None,
                  approved: Sequence[envelope.Recipient],
                  key_ids: Sequence[int]) -> dict[str, object]:
    """What the upload audit event says about a pre-encrypted file's recipients."""
    details: dict[str, object] = {"encrypted_here": False, "encryption": PRE_ENCRYPTED,
                                  "payload_check": PAYLOAD_CHECKED,
                                  "stanzas": list(header.stanza_types) if header else []}
    if declared is not None:
        ids = dict(zip((r.fingerprint for r in approved), key_ids, strict=True))
        kinds = {r.fingerprint: r.kind for r in approved}
        details["declared_recipients"] = list(declared)
        details["declared_key_ids"] = [ids[fingerprint] for fingerprint in declared]
        details["declared_kinds"] = [kinds[fingerprint] for fingerprint in declared]
    return details
