"""A private PostgreSQL server for the tests: initdb in a temporary directory, loopback only.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
that Debian's package creates.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

INSTALL_HINT = "PostgreSQL server not found: run `make test` (it apt-installs postgresql)"


def _bin_dir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        pytest.fail(INSTALL_HINT)
    return Path(candidates[-1]).parent


def postgres_tool(name: str) -> str:
    """The path of a PostgreSQL program (``pg_dump``, ``pg_restore``) of the installed server."""
    return str(_bin_dir() / name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PostgresServer:
    """A throwaway server in a temporary directory, which a test may stop and start again."""

    def __init__(self) -> None:
        self._bin_dir = _bin_dir()
        self._root = Path(tempfile.mkdtemp(prefix="blindpost-pg-"))
        self._data = self._root / "data"
        if os.geteuid() == 0:
            shutil.chown(self._root, "postgres")
        self.port = _free_port()
        subprocess.run(_as_server_user([str(self._bin_dir / "initdb"), "-D", str(self._data),
                                        "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                        "--no-sync"]),
                       check=True, capture_output=True)

    @property
    def url(self) -> str:
        """The base URL: ``postgresql://postgres@127.0.0.1:PORT``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self._root} -h 127.0.0.1 -c fsync=off "
                   "-c max_connections=200")
        self._pg_ctl("-w", "-l", str(self._root / "log"), "-o", options, "start")

    def stop(self) -> None:
        """Stop at once, cutting every client connection (``-m fast``)."""
        self._pg_ctl("-m", "fast", "stop")

    def remove(self) -> None:
        self._pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(self._root, ignore_errors=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(_as_server_user([str(self._bin_dir / "pg_ctl"), "-D", str(self._data),
                                        *args]), check=check, capture_output=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Run a throwaway server; yield its base URL (``postgresql://postgres@127.0.0.1:PORT``)."""
    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.remove()


def create_database(base_url: str, name: str) -> str:
    """Create an empty database on the test server; return its URL."""
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # Test-generated name, not input.
    return f"{base_url}/{name}"
