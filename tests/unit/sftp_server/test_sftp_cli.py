"""``blindpost sftp`` (and ``console``) with an unusable address: one clear line, exit 2 for a
malformed value and 1 for what the host refuses (issue 15, point 8), naming the listener and
the setting that moves it (issue 22)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli.program import main


@pytest.fixture
def initialised(tmp_path: Path) -> Callable[..., Result]:
    """``blindpost --data-dir DIR ARGS…`` on an initialised data directory."""
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, ["--data-dir", str(tmp_path / "var"), *args],
                                  catch_exceptions=False)
    assert invoke("init", "--admin", "alice").exit_code == 0
    return invoke


def _holder(*, reuse_port: bool) -> Iterator[int]:
    """A socket listening on a free port, as another server would hold it."""
    sock = socket.socket()
    if reuse_port:
        # What a second Blindpost (or any SO_REUSEPORT server) sets: without a check, the
        # kernel would silently share the port between the two.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture(params=[True, False], ids=["reuse-port", "plain"])
def busy_port(request: pytest.FixtureRequest) -> Iterator[int]:
    yield from _holder(reuse_port=request.param)


def _one_line(result: Result, exit_code: int, message: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.output.startswith("blindpost: error: "), result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_busy_address(initialised: Callable[..., Result], busy_port: int, workers: str) -> None:
    result = initialised("sftp", "--listen", f"127.0.0.1:{busy_port}", "--workers", workers)
    _one_line(result, 1, f"cannot listen on 127.0.0.1:{busy_port} for the SFTP server: the "
                         "address is already in use (is another server running there?); set "
                         "another with sftp_listen in blindpost.toml, BLINDPOST_SFTP_LISTEN or "
                         "--listen")


def test_busy_console_address(initialised: Callable[..., Result]) -> None:
    # The console is another adapter, with its own listen setting: the message names it.
    holder = _holder(reuse_port=False)
    port = next(holder)
    try:
        result = initialised("console", "--listen", f"127.0.0.1:{port}")
    finally:
        holder.close()
    _one_line(result, 1, f"cannot listen on 127.0.0.1:{port} for the console: the address is "
                         "already in use (is another server running there?); set another "
                         "with console_listen in blindpost.toml, BLINDPOST_CONSOLE_LISTEN or "
                         "--listen")


def test_address_not_on_this_host(initialised: Callable[..., Result]) -> None:
    # 192.0.2.0/24 is reserved for documentation; no host has it.
    result = initialised("sftp", "--listen", "192.0.2.1:2222", "--workers", "1")
    _one_line(result, 1, "cannot listen on 192.0.2.1:2222: ")


@pytest.mark.parametrize(("listen", "message"), [
    ("127.0.0.1:99999", "--listen: expected HOST:PORT"),
    ("localhost", "--listen: expected HOST:PORT"),
    ("no-such-host.invalid:2222", "cannot listen on no-such-host.invalid:2222: unknown host"),
    ("a\x00b:2222", "cannot listen on 'a\\x00b:2222': unknown host"),
    ("x" * 300 + ":2222", "unknown host"),
])
def test_malformed_address(initialised: Callable[..., Result], listen: str, message: str) -> None:
    _one_line(initialised("sftp", "--listen", listen, "--workers", "1"), 2, message)


def test_absurd_worker_count(initialised: Callable[..., Result]) -> None:
    result = initialised("sftp", "--workers", str(10**30))
    assert result.exit_code == 2
    assert "1<=x<=256" in result.output
