"""A busy address names the listener that could not start and how to move it."""

from __future__ import annotations

import socket

import pytest

from gateway.config import address_in_use
from gateway.errors import StartupError
from gateway.metrics import serve_metrics


def test_the_message_names_the_setting_the_variable_and_the_flag() -> None:
    message = address_in_use("console_listen", "127.0.0.1:8443")
    assert message == ("cannot listen on 127.0.0.1:8443 for the console: the address is "
                       "already in use (is another server running there?); set another with "
                       "console_listen in blindpost.toml, BLINDPOST_CONSOLE_LISTEN or --listen")


def test_a_busy_metrics_address_names_metrics_listen() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(StartupError) as refused:
            serve_metrics(f"127.0.0.1:{port}", [])
    assert str(refused.value) == (
        f"cannot listen on 127.0.0.1:{port} for the metrics endpoint: the address is already "
        "in use (is another server running there?); set another with metrics_listen in "
        "blindpost.toml or BLINDPOST_METRICS_LISTEN")
