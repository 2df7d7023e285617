"""A local S3 endpoint for the tests: moto in server mode, in its own process.

A separate process (not moto's in-process mock) so that the store talks real HTTP to a
real server, as it would to MinIO, and so that SFTP nodes started by the tests can reach
the same endpoint.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

INSTALL_HINT = "moto is not installed: run `make test-deps` (it installs .[dev])"
CREDENTIALS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing",
               "s3_region": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """Run ``moto_server`` on a free loopback port; yield its endpoint URL."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail(INSTALL_HINT)
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto server did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def create_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the endpoint; return its name."""
    import boto3

    name = f"t{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(
        Bucket=name)
    return name


def s3_settings(endpoint: str, bucket: str, prefix: str = "blindpost") -> dict[str, object]:
    """Settings overrides that put the store in ``bucket`` on ``endpoint``."""
    return {"store_url": f"s3://{bucket}/{prefix}", "s3_endpoint_url": endpoint, **CREDENTIALS}
