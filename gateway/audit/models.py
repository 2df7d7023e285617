"""The audit tables: entries (the leaves), tree nodes and signed checkpoints.

All three are append-only; the migration ``0002_audit`` installs the triggers that make
the database itself refuse UPDATE, DELETE (and, on PostgreSQL, TRUNCATE).
"""

from __future__ import annotations

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
