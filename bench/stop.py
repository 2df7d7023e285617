"""Measure how long ``blindpost sftp`` takes to stop, and to replace a killed worker (not a test).

Stop times, from the signal to the main process's exit, for each way a stop is asked
for (SIGTERM to the process group as systemd and container runtimes send it, SIGTERM to
the main process alone, SIGINT to the group as Ctrl-C does), with no session, with an
idle signed-in session, and with an upload that cannot finish within the drain time.
Then a worker is killed with SIGKILL: the time until a new sign-in succeeds and until
the replacement worker accepts connections.

    python bench/stop.py [--workers 2] [--repeat 3] [--drain 3]

The bound the tests hold: the drain time plus a few seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.db.models import Role  # noqa: E402
from tests.integration.gateway_process import (  # noqa: E402
    GatewayProcess,
    banner_served_by,
    real_code,
    sign_in_within,
    throttled_upload,
    wait_for,
)
from tests.unit.sftp_server.harness import Installation, paramiko_sftp  # noqa: E402

MIB = 1 << 20
READY = re.compile(r"SFTP worker \d+ is back")
PATHS = {"SIGTERM to group": (signal.SIGTERM, True),
         "SIGTERM to main": (signal.SIGTERM, False),
         "SIGINT to group": (signal.SIGINT, True)}


def installation() -> Installation:
    inst = Installation(Path(tempfile.mkdtemp(prefix="blindpost-bench-stop-")))
    inst.add_partner("acme")
    inst.add_user("clerk", Role.STAFF)
    inst.add_user("lee", Role.PARTNER, partner="acme")
    return inst


def stop_idle(args: argparse.Namespace, signum: signal.Signals, group: bool) -> float:
    inst = installation()
    server = GatewayProcess.sftp(inst, workers=args.workers)
    try:
        return server.stop(signum, group=group)
    finally:
        server.kill()
        inst.close()


def stop_with_session(args: argparse.Namespace, signum: signal.Signals, group: bool) -> float:
    inst = installation()
    server = GatewayProcess.sftp(inst, workers=args.workers)
    try:
        user = inst.users["lee"]
        with paramiko_sftp(inst, user, code=real_code(user)) as sftp:
            sftp.listdir("/")
            return server.stop(signum, group=group)
    finally:
        server.kill()
        inst.close()


def stop_with_upload(args: argparse.Namespace, signum: signal.Signals, group: bool) -> float:
    inst = installation()
    source = inst.root / "big.bin"
    source.write_bytes(os.urandom(64 * MIB))
    server = GatewayProcess.sftp(inst, workers=args.workers,
                                 env={"BLINDPOST_SHUTDOWN_DRAIN_SECONDS": str(args.drain)})
    upload = throttled_upload(inst, source, "/acme/big.bin")
    try:
        wait_for(lambda: any(p.stat().st_size for p in inst.app.store.partial_dir.iterdir()))
        return server.stop(signum, group=group)
    finally:
        upload.kill()
        upload.communicate()
        server.kill()
        inst.close()


def worker_restart(args: argparse.Namespace) -> tuple[float, float, float]:
    """Seconds from SIGKILL to: a new sign-in, the replacement's "ready", its first accept."""
    inst = installation()
    server = GatewayProcess.sftp(inst, workers=args.workers)
    try:
        workers_before = server.worker_pids()
        victim = workers_before[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        listing = sign_in_within(inst, inst.users["lee"], 30)
        assert listing.returncode == 0, listing.stderr
        sign_in = time.monotonic() - killed
        wait_for(lambda: READY.search(server.output) is not None, 30, "the replacement")
        ready = time.monotonic() - killed
        replacement, = set(server.worker_pids()) - set(workers_before)
        wait_for(lambda: banner_served_by(server) == replacement, 30)
        return sign_in, ready, time.monotonic() - killed
    finally:
        server.kill()
        inst.close()


def summary(samples: list[float]) -> str:
    return (f"median {statistics.median(samples):5.2f} s   max {max(samples):5.2f} s   "
            f"({', '.join(f'{s:.2f}' for s in samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--drain", type=int, default=3,
                        help="shutdown_drain_seconds for the run with an unfinished upload")
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    if args.tiny:
        args.repeat, args.drain = 1, 1
    print(f"blindpost sftp with {args.workers} workers, {args.repeat} runs each; "
          f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}")
    # --tiny: each measurement once, on the first stop path only.
    paths = dict(list(PATHS.items())[:1]) if args.tiny else PATHS
    for label, (signum, group) in paths.items():
        for kind, measure in (("no session", stop_idle), ("idle session", stop_with_session)):
            samples = [measure(args, signum, group) for _ in range(args.repeat)]
            print(f"stop, {kind:12}, {label:16}  {summary(samples)}")
    upload = [stop_with_upload(args, signal.SIGTERM, True) for _ in range(args.repeat)]
    print(f"stop, upload that cannot finish (drain {args.drain} s), SIGTERM to group: "
          f"{summary(upload)}")
    restarts = [worker_restart(args) for _ in range(args.repeat)]
    print(f"worker SIGKILL -> new sign-in ok:            {summary([r[0] for r in restarts])}")
    print(f"worker SIGKILL -> replacement ready:         {summary([r[1] for r in restarts])}")
    print(f"worker SIGKILL -> replacement accepts:       {summary([r[2] for r in restarts])}")


if __name__ == "__main__":
    main()
