"""Tamper-evident audit log: RFC 6962 Merkle tree, signed checkpoints, offline verification.

Services record events with :meth:`AuditLog.record`; ``blindpost audit`` verifies,
checkpoints, proves and exports. Everything else here is for those two.

The names below are imported when first used: the offline verifier of an export
(:func:`verify_export`) and the formats ``blindpost witness`` needs (``note``,
``merkle``, ``cosignature``) run on a client-only install, without the database layer
that :class:`AuditLog` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.audit.errors import AuditError, StaleStateError, VerificationError
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
        VerifiedState,
        VerifyReport,
        verify_database,
        verify_export,
        verify_from,
    )

_MODULE_OF = {
    "AuditError": "errors", "StaleStateError": "errors", "VerificationError": "errors",
    "AuditEvent": "events",
    "AuditLog": "log", "SignedCheckpoint": "log", "Checkpoint": "note",
    "NoteSigner": "note", "NoteVerifier": "note", "generate_signing_key_file": "note",
    "load_signer": "note", "verify_tlog_proof": "proof", "AuditTag": "tags",
    "VerifiedCheckpoint": "verify", "VerifiedState": "verify", "VerifyReport": "verify",
    "verify_database": "verify", "verify_export": "verify", "verify_from": "verify",
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
    "StaleStateError",
    "VerificationError",
    "VerifiedCheckpoint",
    "VerifiedState",
    "VerifyReport",
    "generate_signing_key_file",
    "load_signer",
    "verify_database",
    "verify_export",
    "verify_from",
    "verify_tlog_proof",
]


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
