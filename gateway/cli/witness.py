"""``blindpost witness …``: run a tlog-witness for the gateways you depend on.

Runs from the client install (``pip install blindpost``): no database, no web stack.
See deploy/runbooks/run-a-witness.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from gateway.audit.cosignature import CosignatureVerifier, Cosigner
from gateway.audit.note import generate_signing_key_file, read_private_key
from gateway.cli.errors import fail
from gateway.config import parse_listen
from gateway.stop_signals import StopSignals
from gateway.witness.server import WitnessServer
from gateway.witness.service import Witness
from gateway.witness.state import WitnessState
from gateway.witness.trust import load_config

_config_option = click.option(
    "--config", "config_path", required=True, metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The witness configuration (name, key_file, [[log]] tables).")


@click.group()
def witness() -> None:
    """A transparency-log witness (c2sp.org/tlog-witness) for Blindpost audit logs.

    \b
    A witness cosigns a gateway's checkpoints only if each extends the history it
    cosigned before, so the gateway cannot rewrite its audit log unnoticed.
    """


@witness.command("keygen")
@click.option("--name", required=True, help="The witness's key name, a schema-less URL such "
              "as witness.partner.example/w1.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the new private key here (mode 0600; never overwritten).")
def keygen(name: str, output: Path) -> None:
    """Create a witness key and print its verifier key (vkey) for gateway operators.

    \b
    Example:
      blindpost witness keygen --name witness.partner.example/w1 -o witness.key
    """
    CosignatureVerifier(name, bytes(32))  # Checks the name before anything is written.
    generate_signing_key_file(output, what="a witness key")
    key = read_private_key(output, what="witness key", hint="")
    click.echo(Cosigner(name, key).verifier.key_string())
    click.echo(f"wrote {output}; give the line above to the gateways you witness", err=True)


@witness.command("key")
@_config_option
def key(config_path: Path) -> None:
    """Print the witness's verifier key (vkey) again.

    \b
    Example:
      blindpost witness key --config /etc/blindpost-witness/witness.toml
    """
    click.echo(load_config(config_path).cosigner().verifier.key_string())


@witness.command("serve")
@click.option("--listen", default="127.0.0.1:7380", show_default=True, metavar="HOST:PORT",
              help="Where to accept HTTP (put a TLS reverse proxy in front).")
@click.option("--state", "state_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the latest cosigned checkpoint of each log is kept.")
@_config_option
def serve(listen: str, state_dir: Path, config_path: Path) -> None:
    """Serve POST /add-checkpoint and GET /<origin hash>/checkpoint until stopped.

    \b
    Example:
      blindpost witness serve --listen 127.0.0.1:7380 \\
          --state /var/lib/blindpost-witness --config /etc/blindpost-witness/witness.toml
    """
    logging.getLogger("gateway.witness").setLevel(logging.INFO)
    config = load_config(config_path)
    service = Witness(cosigner=config.cosigner(), logs=config.logs,
                      state=WitnessState(state_dir))
    host, port = parse_listen(listen, key="--listen")
    stop = StopSignals()
    try:
        server = WitnessServer((host, port), service)
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc.strerror}")
    thread = server.serve_in_thread()
    click.echo(f"Blindpost witness {config.name} listening on {host}:{server.port} for "
               f"{len(config.logs)} log(s)")
    try:
        stop.wait(None)
    finally:
        stop.close()
        server.shutdown()
        server.server_close()
        thread.join()
    click.echo("witness stopped")
