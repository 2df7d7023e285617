"""Engine construction for SQLite (embedded default) and PostgreSQL, and migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import DatabaseError, DatabaseUnavailableError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# A PostgreSQL host that drops packets would otherwise hold a connection attempt for
# minutes (the kernel's TCP timeout); a refused or failed attempt is reported at once.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
_READ_ONLY = "blindpost_read_only"


def make_engine(url: str, *, busy_timeout_seconds: int = SQLITE_BUSY_TIMEOUT_SECONDS) -> Engine:
    """Create an engine that survives a database restart and waits out a brief lock.

    PostgreSQL: every pooled connection is pinged when it is checked out, so connections
    a restart has cut are replaced instead of failing the next request. SQLite: WAL,
    foreign keys, durability, and ``busy_timeout_seconds`` of waiting for a lock held
    elsewhere (a backup, another process) before :class:`DatabaseUnavailableError`.

    Every SQLite transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up
    front, which serialises writers (the audit sequencer relies on it) and avoids the
    deadlock of two readers upgrading to writers at once. SQLite's pool has no ceiling
    (connections beyond the five kept are opened on demand, in about 0.1 ms, and closed
    when given back): a ceiling would only add a second queue in front of the write lock,
    and a writer that needs a second connection (to read what is committed) would wait
    in it behind threads that are waiting for that writer's lock.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, connect_args={
            "connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS})
    database = make_url(url).database
    _create_private_file(database)
    # An in-memory database lives in one connection (SQLAlchemy's own pool for it).
    unbounded = {"max_overflow": -1} if database and database != ":memory:" else {}
    engine = create_engine(url, connect_args={"timeout": busy_timeout_seconds}, **unbounded)
    event.listen(engine, "connect",
                 partial(_configure_sqlite_connection, busy_timeout_ms=busy_timeout_seconds * 1000))
    event.listen(engine, "begin", _begin_immediate)
    return engine


@contextmanager
def unavailable_as_error() -> Iterator[None]:
    """Report a lost connection or a lock held past the busy timeout as one clear error.

    The transaction it interrupted was rolled back by the database, so the request
    changed nothing; :class:`DatabaseUnavailableError` says so and that a retry may work.
    """
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
        raise DatabaseUnavailableError(
            f"the database is unavailable: {describe_error(exc)}") from exc


def _create_private_file(database: str | None) -> None:
    """Create a new SQLite file 0600 before SQLite does (it would follow the umask).

    SQLite gives its -wal and -shm files the database file's permissions. An existing file
    is never opened here: closing any descriptor of a database file drops every POSIX lock
    this process holds on it, which corrupts other connections' view of the database.
    """
    if not database or database == ":memory:":
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseError(f"cannot create the database file {database}: {exc.strerror}") from exc


def _configure_sqlite_connection(dbapi_connection: Any, _record: object, *,
                                 busy_timeout_ms: int) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" event emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    read_only = connection.get_execution_options().get(_READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def reader(engine: Engine) -> Engine:
    """The same engine for short reads that must not queue behind (or block) a writer:
    on SQLite a deferred ``BEGIN``, so a process can read what is committed while one of
    its own transactions holds the write lock."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_READ_ONLY: True})
    return engine


@contextmanager
def snapshot(engine: Engine) -> Iterator[Session]:
    """A read-only session over one consistent snapshot that does not block writers.

    On SQLite a deferred ``BEGIN`` (one WAL snapshot for every query, no write lock); on
    PostgreSQL ``REPEATABLE READ``. Long reads — verification, exports — use this.
    """
    if engine.dialect.name == "sqlite":
        reader = engine.execution_options(**{_READ_ONLY: True})
    else:
        reader = engine.execution_options(isolation_level="REPEATABLE READ",
                                          postgresql_readonly=True)
    with Session(reader) as session:
        try:
            yield session
        finally:
            session.rollback()


def make_sessionmaker(engine: Engine, *,
                      info: dict[str, object] | None = None) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit; ``info`` joins each
    session's ``info``."""
    return sessionmaker(engine, expire_on_commit=False, info=info)


def _alembic_config(engine: Engine) -> AlembicConfig:
    # Imported here: only migrations need alembic, and the admin commands that only read
    # and write rows start faster without it.
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Apply every pending migration; raise :class:`DatabaseError` if the database fails."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), "head")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot migrate the database: {describe_error(exc)}") from exc


def check_reachable(engine: Engine) -> None:
    """Raise :class:`DatabaseError` with one clear line when the database cannot be reached."""
    try:
        with engine.connect() as connection:
            inspect(connection).get_table_names()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot reach the database: {describe_error(exc)}") from exc


def describe_error(exc: SQLAlchemyError) -> str:
    """The first line of the driver's own message, without SQL or parameters."""
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__
