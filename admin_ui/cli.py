"""``blindpost console``: run the web console and JSON API on their own.

Registered with the ``blindpost`` CLI through the ``blindpost.commands`` entry point, so
the gateway never imports this package.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from types import FrameType

import click

from gateway.cli.common import data_dir_option, open_app
from gateway.db import upgrade

POLL_SECONDS = 0.2


@click.command("console")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (default: console_listen, 127.0.0.1:8443).")
@data_dir_option
def console(listen: str | None, data_dir: Path | None) -> None:
    """Run the admin console and its JSON API (/api/v1) until interrupted.

    Admins and auditors sign in with their password and a one-time code or passkey.
    Without console_tls_cert/key it speaks plain HTTP: keep it on loopback or behind
    the TLS reverse proxy in deploy/.

    \b
    Example:
      blindpost console --data-dir /var/lib/blindpost --listen 127.0.0.1:8443
    """
    from admin_ui.service import start

    app = open_app(data_dir)
    upgrade(app.engine)
    app.record_settings(component="console")
    settings = app.settings
    if listen is not None:
        settings = dataclasses.replace(settings, console_listen=listen)
    app.close()
    running = start(settings)
    host, port = running.address
    click.echo(f"Blindpost console listening on {host}:{port}: {running.notice}; "
               "stop with Ctrl-C.")
    requested: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not requested:
        time.sleep(POLL_SECONDS)
    running.stop()
    running.wait()
