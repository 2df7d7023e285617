"""Tamper-evident audit log: RFC 6962 Merkle tree, signed checkpoints, offline verification.

Services record events with :meth:`AuditLog.record`; ``blindpost audit`` verifies,
checkpoints, proves and exports. Everything else here is for those two.
"""

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
