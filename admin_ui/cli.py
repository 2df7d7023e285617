"""``blindpost console``: run the web console and JSON API on their own.

Registered with the ``blindpost`` CLI through the ``blindpost.commands`` entry point, so
the gateway never imports this package.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import click

from gateway.cli.common import data_dir_option, open_app
from gateway.stop_signals import StopSignals


@click.command("console")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (default: console_listen, 127.0.0.1:8443).")
@data_dir_option
def console(listen: str | None, data_dir: Path | None) -> None:
    """Run the admin console and its JSON API (/api/v1) until interrupted.

    Admins and auditors sign in with their password and a one-time code or passkey.
    Without console_tls_cert/key it speaks plain HTTP: keep it on loopback or behind
    the TLS reverse proxy in deploy/. SIGTERM or SIGINT (Ctrl-C) stops it, with a last
    audit checkpoint.

    \b
    Example:
      blindpost console --data-dir /var/lib/blindpost --listen 127.0.0.1:8443
    """
    # Imported here: `blindpost --help` lists this command without the database layer.
    from admin_ui.service import start
    from gateway.housekeeping import Housekeeping

    app = open_app(data_dir)
    app.record_settings(component="console")
    settings = app.settings
    if listen is not None:
        settings = dataclasses.replace(settings, console_listen=listen)
    for name in ("admin_ui", "gateway"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    # Caught from before the server starts, so that a stop during start-up waits for it.
    stop = StopSignals()
    running = start(settings)
    host, port = running.address
    chores = Housekeeping(app, component="console")
    chores.started(address=f"{host}:{port}")
    click.echo(f"Blindpost console listening on {host}:{port}: {running.notice}; "
               "stop with Ctrl-C.")
    try:
        chores.run(stop, purge=False)
    finally:
        begun = time.monotonic()
        running.stop()
        running.wait()
    chores.stopped(reason=stop.name, seconds=round(time.monotonic() - begun, 2))
    chores.final_checkpoint()
    app.close()
