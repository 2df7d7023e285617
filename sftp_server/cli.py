"""``blindpost sftp``: run the SFTP server on its own (production's separate service).

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
from gateway.config import MAX_WORKERS, parse_listen
from gateway.errors import ConfigError, UsageError
from gateway.logs import configure_logging
from gateway.stop_signals import StopSignals

log = logging.getLogger(__name__)


@click.command("sftp")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Address to listen on (default: sftp_listen, 127.0.0.1:2222).")
@click.option("--workers", type=click.IntRange(min=1, max=MAX_WORKERS), default=None,
              help="Worker processes sharing the port (default: sftp_workers, or one per core).")
@data_dir_option
def sftp(listen: str | None, workers: int | None, data_dir: Path | None) -> None:
    """Run the SFTP server until interrupted: SSH key plus one-time code for every login.

    Staff see one folder per partner and upload into it (files are encrypted on the
    fly to the partner's approved keys); partners see their own inbox of *.age files.
    SIGTERM or SIGINT (Ctrl-C) stops it: transfers under way get shutdown_drain_seconds
    to finish, the rest are aborted, and a last audit checkpoint is signed.

    \b
    Example:
      blindpost sftp --data-dir /var/lib/blindpost --listen 0.0.0.0:2222 --workers 4
    """
    # Imported here: `blindpost --help` lists this command without the database layer.
    from gateway.housekeeping import Housekeeping
    from sftp_server.service import start

    overrides: dict[str, object] = {}
    if listen is not None:
        try:
            parse_listen(listen, key="--listen")
        except ConfigError as exc:
            raise UsageError(exc.diagnostics()) from exc
        overrides["sftp_listen"] = listen
    app = open_app(data_dir)
    app.record_settings(component="sftp")
    if workers is not None:
        overrides["sftp_workers"] = workers
    settings = dataclasses.replace(app.settings, **overrides)  # type: ignore[arg-type]
    configure_logging(settings, process="sftp")
    # Caught from before the workers start, so that a stop during start-up waits for it.
    stop = StopSignals()
    running = start(settings)
    host, port = running.address
    chores = Housekeeping(app, component="sftp")
    chores.started(address=f"{host}:{port}", workers=running.workers)
    click.echo(f"Blindpost SFTP listening on {host}:{port} with {running.workers} "
               f"worker(s); stop with Ctrl-C.")
    # The time-based checkpoint must not depend on `serve`: this process signs one
    # whenever one is due, and a last one when it stops.
    try:
        chores.run(stop, purge=False)
    finally:
        begun = time.monotonic()
        log.info("%s: stopping; open transfers get up to %d s to finish",
                 stop.name or "error", settings.shutdown_drain_seconds)
        running.stop()
        running.wait()
    chores.stopped(reason=stop.name, seconds=round(time.monotonic() - begun, 2))
    chores.final_checkpoint()
    app.close()
