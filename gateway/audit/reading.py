"""The audit tables as verification reads them: with the driver, in large batches.

Verification reads every entry and every stored tree node; through the ORM that is a
row object, a type conversion and a datetime per row, which cost more than the checks.
Here the rows come from a driver cursor on the session's own connection (so in its
snapshot) as plain tuples, a batch per query, paged by primary key so that memory stays
bounded on SQLite and PostgreSQL alike.

An entry row is ``(idx, time text, tag, leaf, mac)``; the time text is the column as
SQLite stores it (``YYYY-MM-DD HH:MM:SS.ffffff``), and PostgreSQL renders its timestamp
the same way, so one comparison serves both (see :mod:`gateway.audit.leaves`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, bindparam, case, func, select
from sqlalchemy.orm import Session

from gateway.audit.log import SessionNodes, checkpoints, entries, nodes

BATCH = 10_000
EntryRow = tuple[int, Any, Any, Any, Any]

# The widest range both databases' integer keys hold: no index lies beyond it.
_NO_END = (1 << 63) - 1


class _DriverQuery:
    """A SQLAlchemy query compiled once for the connection's dialect, run on a driver
    cursor: bound parameters as always, without a row object per result row."""

    def __init__(self, query: Select[Any], connection: Connection) -> None:
        self._compiled = query.compile(dialect=connection.dialect)
        self.sql = str(self._compiled)

    def params(self, **values: object) -> tuple[object, ...] | Mapping[str, object]:
        bound = self._compiled.construct_params(values)
        order = self._compiled.positiontup
        return tuple(bound[name] for name in order) if order is not None else bound


class LogTables:
    """Reads the audit tables in the transaction of ``session``."""

    def __init__(self, session: Session) -> None:
        self._session = session
        connection = session.connection()
        self._dbapi = connection.connection
        time: ColumnElement[Any] = entries.c.recorded_at
        if connection.dialect.name == "postgresql":
            # SQLite's stored text; the text of a timestamp column is the same everywhere.
            time = func.to_char(entries.c.recorded_at, "YYYY-MM-DD HH24:MI:SS.US")
        self._entries = _DriverQuery(
            select(entries.c.idx, time, entries.c.tag, entries.c.leaf,
                   # MACs only from where they are checked: most entries need none.
                   case((entries.c.idx >= bindparam("macs_from"), entries.c.mac)))
            .where(entries.c.idx >= bindparam("start"), entries.c.idx < bindparam("stop"))
            .order_by(entries.c.idx).limit(bindparam("batch")), connection)
        self._nodes = _DriverQuery(
            select(nodes.c.pos, nodes.c.hash).where(nodes.c.pos >= bindparam("start"))
            .order_by(nodes.c.pos).limit(bindparam("batch")), connection)

    @property
    def node_reader(self) -> SessionNodes:
        """Stored nodes by coordinate, for proofs and a resumed tree."""
        return SessionNodes(self._session)

    def entries(self, start: int = 0, stop: int | None = None, *,
                macs_from: int = 0) -> Generator[list[EntryRow], None, None]:
        """Batches of entry rows with ``start <= idx < stop``, in index order; the MAC
        is ``None`` below ``macs_from``."""
        # Past the largest integer both databases hold: no index is beyond it.
        end = _NO_END if stop is None else stop
        cursor = self._dbapi.cursor()
        try:
            while start < end:
                cursor.execute(self._entries.sql, self._entries.params(
                    start=start, stop=end, batch=BATCH, macs_from=macs_from))
                batch: list[EntryRow] = list(cursor.fetchall())
                if not batch:
                    return
                yield batch
                start = int(batch[-1][0]) + 1
        finally:
            cursor.close()

    def nodes(self, start: int = 0) -> Generator[list[tuple[int, bytes]], None, None]:
        """Batches of stored nodes ``(pos, hash)`` from position ``start``, in order."""
        cursor = self._dbapi.cursor()
        try:
            while True:
                cursor.execute(self._nodes.sql, self._nodes.params(start=start,
                                                                   batch=BATCH * 2))
                batch = cursor.fetchall()
                if not batch:
                    return
                yield list(batch)
                start = int(batch[-1][0]) + 1
        finally:
            cursor.close()

    def stored_checkpoints(self) -> Iterator[tuple[int, int, bytes, str]]:
        """Every stored checkpoint ``(id, size, root, note)``, oldest first."""
        query = select(checkpoints.c.id, checkpoints.c.size, checkpoints.c.root,
                       checkpoints.c.note).order_by(checkpoints.c.id)
        for row in self._session.execute(query):
            yield row.id, row.size, row.root, row.note

