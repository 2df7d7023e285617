"""Tamper-evident audit log: RFC 6962 Merkle tree, signed checkpoints, offline verification.

Services record events with :meth:`AuditLog.record`; ``blindpost audit`` verifies,
checkpoints, proves and exports. Everything else here is for those two.

The names below are loaded on first use: the formats (``note``, ``merkle``,
``cosignature``) need only the client install, so ``blindpost witness`` can import them
on a machine without the server's database layer, which ``log`` and ``events`` need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.audit.errors import AuditError, VerificationError
    from gateway.audit.events import AuditEvent
    from gateway.audit.log import AuditLog, SignedCheckpoint
    from gateway.audit.note import (
        Checkpoint,
        NoteSigner,
        NoteVerifier,
        generate_signing_key_file,
        load_signer,
    )
    from gateway.audit.proof import verify_tlog_proof
    from gateway.audit.tags import AuditTag
    from gateway.audit.verify import (
        VerifiedCheckpoint,
        VerifyReport,
        verify_database,
        verify_export,
    )

_HOMES = {
    "AuditError": "errors", "VerificationError": "errors", "AuditEvent": "events",
    "AuditLog": "log", "SignedCheckpoint": "log", "Checkpoint": "note", "NoteSigner": "note",
    "NoteVerifier": "note", "generate_signing_key_file": "note", "load_signer": "note",
    "verify_tlog_proof": "proof", "AuditTag": "tags", "VerifiedCheckpoint": "verify",
    "VerifyReport": "verify", "verify_database": "verify", "verify_export": "verify",
}

__all__ = [
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "AuditTag",
    "Checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "SignedCheckpoint",
    "VerificationError",
    "VerifiedCheckpoint",
    "VerifyReport",
    "generate_signing_key_file",
    "load_signer",
    "verify_database",
    "verify_export",
    "verify_tlog_proof",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway.audit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gateway.audit.{home}"), name)
    globals()[name] = value
    return value
