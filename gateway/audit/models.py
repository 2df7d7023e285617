"""The audit tables: entries (the leaves), tree nodes, signed checkpoints, cosignatures.

All four are append-only; the migrations ``0002_audit`` and ``0009_audit_cosignatures``
install the triggers that make the database itself refuse UPDATE, DELETE (and, on
PostgreSQL, TRUNCATE).
"""

# No `from __future__ import annotations` here: SQLAlchemy would then evaluate every
# column's annotation from its string, about a tenth of what declaring the models costs
# each command at start-up (bench/startup.py).

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.base import Base, UTCDateTime

# On SQLite only ``INTEGER PRIMARY KEY`` aliases the rowid (64-bit there anyway), which
# keeps the append-heavy tables in one B-tree.
_BigKey = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntry(Base):
    """One event: its gap-free index, its time and tag (for queries) and the leaf.

    ``leaf`` is the RFC 8785 canonical JSON of the event, exactly the bytes hashed into
    the tree; ``recorded_at`` and ``tag`` repeat what it says so that queries can use
    indexes, and the verifier checks they agree with it.
    """

    __tablename__ = "audit_entries"
    # The newest event of a tag (the dashboard's last verification) without a scan.
    __table_args__ = (Index("ix_audit_entries_tag_idx", "tag", "idx"),)

    idx: Mapped[int] = mapped_column(_BigKey, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    tag: Mapped[str] = mapped_column(String(64))
    leaf: Mapped[str] = mapped_column(Text)
    # An HMAC of index and leaf with a key derived from keys/state_key, made on append: an
    # entry written without the key (not yet covered by a signed checkpoint) is caught.
    mac: Mapped[str | None] = mapped_column(String(100))


class AuditNode(Base):
    """The hash of one complete perfect subtree, keyed by its completion order.

    See :func:`gateway.audit.merkle.node_position` for the numbering.
    """

    __tablename__ = "audit_nodes"

    pos: Mapped[int] = mapped_column(_BigKey, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """A signed checkpoint (c2sp.org/tlog-checkpoint) of the tree at ``size``."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(Text)


class AuditCosignature(Base):
    """A witness's cosignature (c2sp.org/tlog-cosignature) on a stored checkpoint.

    ``line`` is the signature line as the witness returned it, verified with the
    witness's key before it was stored; appended to the checkpoint's note it makes the
    cosigned checkpoint that ``audit checkpoint`` prints and proofs carry. Append-only.
    """

    __tablename__ = "audit_cosignatures"
    __table_args__ = (Index("ix_audit_cosignatures_checkpoint_id", "checkpoint_id"),
                      Index("ix_audit_cosignatures_witness_size", "witness", "size"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checkpoint_id: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    # The witness's verifier key (vkey): its name, key ID and public key.
    witness: Mapped[str] = mapped_column(String(200))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
