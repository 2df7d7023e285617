"""Two `blindpost sftp` nodes on one PostgreSQL database and one S3 bucket.

Each node has its own data directory holding copies of the keys and configuration (as
the installation runbook says). The test plays the load balancer: it opens each
connection from 127.0.0.1, which the nodes trust, and names the client in a PROXY v2
header. Shown: an upload on one node and its download on the other, a one-time code
used once across nodes, lockouts (per account and per source) holding across nodes,
and one gap-free audit log.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
import paramiko
import pytest
from sqlalchemy import text

from gateway import envelope, totp
from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from sftp_server.proxy import v2_header
from tests.s3 import create_bucket, s3_settings
from tests.unit.gateway.factories import OPERATOR, actor, audit_events
from tests.unit.sftp_server.harness import User, write_key_pair

pytestmark = pytest.mark.integration
MARKER = b"PATIENT-4711,1990-02-03,preeclampsia\n"


@dataclass
class Cluster:
    app: App
    nodes: dict[str, int]
    env: dict[str, str]
    users: dict[str, User]
    identity: envelope.Identity
    bucket: str
    endpoint: str


def _env(data_dir: Path, postgres_url: str, endpoint: str, bucket: str) -> dict[str, str]:
    settings = {f"BLINDPOST_{k.upper()}": str(v)
                for k, v in s3_settings(endpoint, bucket).items()}
    return {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
            **settings, "BLINDPOST_DATA_DIR": str(data_dir),
            "BLINDPOST_DATABASE_URL": postgres_url, "BLINDPOST_SFTP_WORKERS": "1",
            "BLINDPOST_SFTP_PROXY_PROTOCOL_FROM": "127.0.0.1/32",
            "BLINDPOST_SOURCE_THROTTLE_THRESHOLD": "5"}


def _start_node(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    node = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sftp", "--listen",
                             "127.0.0.1:0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert node.stdout is not None
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", node.stdout.readline())
    assert match, node.stderr.read() if node.stderr else ""
    return node, int(match.group(1))


def _add_user(app: App, root: Path, name: str, role: Role, partner: str | None) -> User:
    public = write_key_pair(root / f"id_{name}", name)
    new = app.accounts.add(OPERATOR, username=name, role=role, partner=partner,
                           ssh_keys=[public])
    secret = new.totp_uri.split("secret=")[1].split("&")[0]
    return User(name, role, secret, root / f"id_{name}", public)


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, s3_endpoint: str) -> Iterator[Cluster]:
    bucket = create_bucket(s3_endpoint)
    env_a = _env(tmp_path / "a", postgres_url, s3_endpoint, bucket)
    initialise(tmp_path / "a", admin="root-admin", environ=env_a)
    # The second node: the same keys and configuration, copied.
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("*.jsonl"))
    env_b = {**env_a, "BLINDPOST_DATA_DIR": str(tmp_path / "b")}
    app = App(load_settings(data_dir=tmp_path / "a", environ=env_a))
    app.accounts.add(OPERATOR, username="second-admin", role=Role.ADMIN)
    app.partners.add(OPERATOR, slug="uni")
    identity = envelope.generate_identity(post_quantum=True)
    key = app.keys.propose(actor(app, "root-admin"), partner="uni",
                           recipient=str(identity.recipient))
    app.keys.approve(actor(app, "second-admin"), key_id=key.id)
    users = {name: _add_user(app, tmp_path, name, role, partner) for name, role, partner in [
        ("clerk", Role.STAFF, None), ("lee", Role.PARTNER, "uni"),
        ("mia", Role.PARTNER, "uni")]}
    (node_a, port_a), (node_b, port_b) = _start_node(env_a), _start_node(env_b)
    try:
        yield Cluster(app, {"a": port_a, "b": port_b}, env_a, users, identity, bucket,
                      s3_endpoint)
    finally:
        for node in (node_a, node_b):
            node.send_signal(signal.SIGTERM)
            _, errors = node.communicate(timeout=60)
            assert node.returncode == 0, errors
        app.close()


def _code(user: User) -> str:
    return totp.current_code(user.secret, now=datetime.now(UTC))


def _transport(port: int, source: str) -> paramiko.Transport:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(v2_header(source, "127.0.0.1", 40000, port))
    transport = paramiko.Transport(sock)
    transport.connect()
    return transport


def _sign_in(port: int, source: str, user: User, code: str) -> paramiko.Transport | None:
    transport = _transport(port, source)
    try:
        transport.auth_publickey(user.username, user.pkey)
        transport.auth_interactive(user.username, lambda _t, _i, prompts: [code] * len(prompts))
    except paramiko.AuthenticationException:
        transport.close()
        return None
    return transport


def test_upload_on_one_node_download_on_the_other(cluster: Cluster) -> None:
    clerk, lee = cluster.users["clerk"], cluster.users["lee"]
    code = _code(clerk)
    transport = _sign_in(cluster.nodes["a"], "198.51.100.1", clerk, code)
    assert transport is not None
    with paramiko.SFTPClient.from_transport(transport) as client:  # type: ignore[union-attr]
        client.putfo(io.BytesIO(MARKER * 20_000), "/uni/extract.csv", confirm=False)
    transport.close()
    s3 = boto3.client("s3", endpoint_url=cluster.endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    [stored] = s3.list_objects_v2(Bucket=cluster.bucket)["Contents"]
    assert MARKER not in s3.get_object(Bucket=cluster.bucket, Key=stored["Key"])["Body"].read()

    # The same code on the other node: already used.
    assert _sign_in(cluster.nodes["b"], "198.51.100.1", clerk, code) is None
    assert audit_events(cluster.app, "auth:login:failure")[-1]["details"]["reason"] == (
        "replayed code")

    transport = _sign_in(cluster.nodes["b"], "198.51.100.2", lee, _code(lee))
    assert transport is not None
    with paramiko.SFTPClient.from_transport(transport) as client:  # type: ignore[union-attr]
        ciphertext = client.open("extract.csv.age").read()
    transport.close()
    assert envelope.decrypt_bytes(ciphertext, [cluster.identity]) == MARKER * 20_000
    sources = {e["details"]["source"] for e in audit_events(cluster.app, "auth:login:success")}
    assert sources == {"198.51.100.1", "198.51.100.2"}
    _verify_audit_log(cluster)


def _ghost(port: int, key_holder: User) -> None:
    """A sign-in as an account that does not exist, from 203.0.113.5."""
    transport = _transport(port, "203.0.113.5")
    with pytest.raises(paramiko.AuthenticationException):
        transport.auth_publickey("ghost", key_holder.pkey)
    transport.close()


def test_lockouts_hold_across_nodes(cluster: Cluster) -> None:
    mia, lee = cluster.users["mia"], cluster.users["lee"]
    threshold = cluster.app.settings.lockout_threshold
    nodes = [cluster.nodes["a"], cluster.nodes["b"]]
    # The account: wrong codes from changing addresses, alternating nodes.
    for attempt in range(threshold):
        assert _sign_in(nodes[attempt % 2], f"198.51.100.{10 + attempt}", mia, "000000") is None
    assert _sign_in(nodes[threshold % 2], "198.51.100.99", mia, _code(mia)) is None
    # The source: one address trying names that do not exist, alternating nodes.
    for attempt in range(cluster.app.settings.source_throttle_threshold):
        _ghost(nodes[attempt % 2], mia)
    # An abandoned sign-in is counted when the node sees the connection end.
    deadline = time.monotonic() + 10
    while not any(e["subject"] == "source:203.0.113.5" for e in
                  audit_events(cluster.app, "auth:lockout")) and time.monotonic() < deadline:
        time.sleep(0.1)
    _ghost(nodes[1], mia)  # Held back now, on either node.
    # A colleague behind the same address proves their key and is not held back.
    transport = _sign_in(nodes[threshold % 2], "203.0.113.5", lee, _code(lee))
    assert transport is not None
    transport.close()
    failures = audit_events(cluster.app, "auth:login:failure")
    assert [e["details"]["reason"] for e in failures
            if e["details"]["source"] == "198.51.100.99"] == ["account locked out"]
    assert [e for e in failures
            if e["details"]["reason"].startswith("unknown account; source held back until")]
    assert {e["subject"] for e in audit_events(cluster.app, "auth:lockout")} == {
        "account:mia", "source:203.0.113.5"}
    _verify_audit_log(cluster)


def test_an_old_copy_put_back_signs_in_on_neither_node(cluster: Cluster) -> None:
    """Lee is disabled; the database writer puts Lee's enabled row back, seal and all.
    Both nodes follow the one log, so neither honours it, and the lockout it would lift
    by deleting the throttle rows holds too."""
    lee, mia = cluster.users["lee"], cluster.users["mia"]
    with cluster.app.engine.connect() as connection:
        [enabled] = [dict(row._mapping) for row in connection.execute(
            text("SELECT * FROM accounts WHERE username = 'lee'"))]
    cluster.app.accounts.disable(OPERATOR, username="lee")
    with cluster.app.engine.begin() as connection:
        assignments = ", ".join(f"{name} = :{name}" for name in enabled)
        connection.execute(text(f"UPDATE accounts SET {assignments} WHERE id = :id"), enabled)
    for node in ("a", "b"):
        assert _sign_in(cluster.nodes[node], "198.51.100.3", lee, _code(lee)) is None
    refused = [e for e in audit_events(cluster.app, "integrity:violation")
               if e["details"]["table"] == "accounts"]
    assert refused and all("not current" in e["details"]["reason"] for e in refused)
    # Mia locks herself out on node a; the rows that record it are deleted; node b
    # still refuses her.
    for _ in range(5):
        transport = _transport(cluster.nodes["a"], "198.51.100.4")
        transport.auth_publickey(mia.username, mia.pkey)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_interactive(mia.username, lambda _t, _i, p: ["000000"] * len(p))
        transport.close()
    with cluster.app.engine.begin() as connection:
        connection.execute(text("DELETE FROM auth_throttle"))
    assert _sign_in(cluster.nodes["b"], "198.51.100.4", mia, _code(mia)) is None
    assert audit_events(cluster.app, "auth:login:failure")[-1]["details"]["reason"] == (
        "account locked out")


def _verify_audit_log(cluster: Cluster) -> None:
    """One log for both nodes: gap-free indices, every hash and checkpoint checked."""
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "verify"],
                            env=cluster.env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("audit log OK")
