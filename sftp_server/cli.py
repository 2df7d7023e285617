"""``blindpost sftp``: run the SFTP server on its own (production's separate service).

Registered with the ``blindpost`` CLI through the ``blindpost.commands`` entry point, so
the gateway never imports this package.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from pathlib import Path
from types import FrameType

import click

from gateway.cli.common import data_dir_option, open_app

POLL_SECONDS = 0.2


@click.command("sftp")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (default: sftp_listen, 127.0.0.1:2222).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes sharing the port (default: sftp_workers, or one per core).")
@data_dir_option
def sftp(listen: str | None, workers: int | None, data_dir: Path | None) -> None:
    """Run the SFTP server until interrupted: SSH key plus one-time code for every login.

    Staff see one folder per partner and upload into it (files are encrypted on the
    fly to the partner's approved keys); partners see their own inbox of *.age files.

    \b
    Example:
      blindpost sftp --data-dir /var/lib/blindpost --listen 0.0.0.0:2222 --workers 4
    """
    from sftp_server.service import start

    app = open_app(data_dir)
    app.record_settings(component="sftp")
    overrides: dict[str, object] = {}
    if listen is not None:
        overrides["sftp_listen"] = listen
    if workers is not None:
        overrides["sftp_workers"] = workers
    settings = dataclasses.replace(app.settings, **overrides)  # type: ignore[arg-type]
    app.close()
    logging.getLogger("sftp_server").setLevel(settings.log_level.upper())
    running = start(settings)
    host, port = running.address
    click.echo(f"Blindpost SFTP listening on {host}:{port} with {running.workers} "
               f"worker(s); stop with Ctrl-C.")

    # The handler only flips a flag: stopping takes locks that the interrupted main
    # thread might hold, which would deadlock inside a signal handler.
    requested: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not requested:
        time.sleep(POLL_SECONDS)
    running.stop()
    running.wait()
