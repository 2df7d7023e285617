"""The README's workflow with the real programs, as an operator, staff and a partner run it.

`blindpost` commands in subprocesses, `blindpost serve` with two worker processes, the
OpenSSH `sftp` client for both transfers (real clock, real TOTP codes), `blindpost
decrypt` and Debian's `age` on the partner's side, then the audit log verified online and
offline from an export.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyotp
import pytest

from tests.unit.sftp_server.harness import askpass_script, require_tool

pytestmark = pytest.mark.integration
MARKER = b"PATIENT-4711,1990-02-03,preeclampsia\n"


class Operator:
    """Runs `blindpost` against one data directory, as the README shows."""

    def __init__(self, root: Path, database_url: str | None = None) -> None:
        self.root = root
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
                    "BLINDPOST_DATA_DIR": str(root / "var"),
                    "BLINDPOST_SFTP_LISTEN": "127.0.0.1:0", "BLINDPOST_SFTP_WORKERS": "2",
                    "BLINDPOST_CONSOLE_LISTEN": "127.0.0.1:0"}
        if database_url:
            self.env["BLINDPOST_DATABASE_URL"] = database_url
        self.secrets: dict[str, str] = {}

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=self.env,
                                capture_output=True, text=True, timeout=60, check=False,
                                cwd=self.root, input=stdin)
        assert result.returncode == 0, (args, result.stderr)
        if args[0] in ("init", "user") and "TOTP provisioning URI: " in result.stdout:
            uri = result.stdout.split("TOTP provisioning URI: ")[1].split()[0]
            self.secrets[str(pyotp.parse_uri(uri).name)] = str(pyotp.parse_uri(uri).secret)
        return result

    def as_admin(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A key command by admin ``name``, who types their current code (piped here)."""
        return self(*args, "--by", name, stdin=pyotp.TOTP(self.secrets[name]).now() + "\n")

    def add_sftp_user(self, name: str, *args: str) -> str:
        """Create the account with a fresh SSH key; return its TOTP secret."""
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                        "-f", str(self.root / name)], check=True)
        added = json.loads(self("user", "add", name, *args, "--ssh-key",
                                str(self.root / f"{name}.pub"), "--json").stdout)
        return str(pyotp.parse_uri(added["totp_uri"]).secret)


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Operator, int]]:
    """`blindpost serve` on the embedded SQLite default, and on PostgreSQL (scale-out)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    op = Operator(tmp_path, url)
    op("init", "--admin", "alice")
    with subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=op.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None
        match = re.search(r"sftp\s+listening on 127\.0\.0\.1:(\d+)",
                          "".join(server.stdout.readline() for _ in range(3)))
        assert match
        yield op, int(match.group(1))
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=30)
        assert server.returncode == 0, errors


def _sftp(op: Operator, port: int, user: str, secret: str, commands: list[str], *,
          ahead: int = 0) -> str:
    """Run ``commands`` as ``user``, with the code ``ahead`` steps on (the current one may
    already be used, and one step ahead is accepted)."""
    batch = op.root / f"{user}.batch"
    batch.write_text("\n".join(commands) + "\n")
    code = pyotp.TOTP(secret).at(time.time() + 30 * ahead)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(op.root), "DISPLAY": ":0",
           "SSH_ASKPASS": str(askpass_script(op.root, code)),
           "SSH_ASKPASS_REQUIRE": "force"}
    result = subprocess.run(
        [require_tool("sftp"), "-o", "BatchMode=no", "-b", str(batch), "-P", str(port),
         "-i", str(op.root / user), "-F", "/dev/null", "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={op.root}/known_hosts",
         f"{user}@127.0.0.1"],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=op.root,
        stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_workflow(served: tuple[Operator, int]) -> None:
    op, port = served
    op("user", "add", "bob", "--role", "admin")
    op("partner", "add", "uni-research", "--name", "University Research", "--retention", "7d")
    recipient = op("keygen", "-o", "partner.key").stderr.split("Public key: ")[1].split()[0]
    assert recipient.startswith("age1pq1")
    key = json.loads(op.as_admin("alice", "key", "propose", "uni-research", recipient,
                                 "--json").stdout)
    op.as_admin("bob", "key", "approve", str(key["id"]))
    clerk = op.add_sftp_user("clerk", "--role", "staff")
    lee = op.add_sftp_user("dr-lee", "--role", "partner", "--partner", "uni-research")

    extract = op.root / "extract.csv"
    extract.write_bytes(MARKER * 50_000)
    _sftp(op, port, "clerk", clerk, ["put extract.csv /uni-research/", "ls -l /uni-research"])
    for stored in (op.root / "var" / "store").rglob("*"):
        if stored.is_file():
            assert MARKER not in stored.read_bytes()
    listing = _sftp(op, port, "dr-lee", lee, ["ls -l", "get extract.csv.age"])
    assert "extract.csv.age" in listing

    op("decrypt", "-i", "partner.key", "-o", "decrypted.csv", "extract.csv.age")
    assert (op.root / "decrypted.csv").read_bytes() == extract.read_bytes()
    tags = [json.loads(line)["tag"] for line in op("audit", "log", "--json").stdout.splitlines()]
    assert {"key:approve", "file:upload:complete", "file:download:complete",
            "auth:login:success"} <= set(tags)

    op("audit", "verify")
    op("audit", "export", "-o", "export.jsonl")
    (op.root / "witness.txt").write_text(op("audit", "checkpoint").stdout)
    verifier = op("audit", "key").stdout.strip()
    op("audit", "verify", "--export", "export.jsonl", "--key", verifier,
       "--checkpoint", "witness.txt")


def test_classic_partner_key_decrypts_with_age(served: tuple[Operator, int]) -> None:
    op, port = served
    op("user", "add", "bob", "--role", "admin")
    op("partner", "add", "lab")
    subprocess.run([require_tool("age-keygen"), "-o", str(op.root / "lab.key")], check=True,
                   capture_output=True)
    recipient = (op.root / "lab.key").read_text().split("public key: ")[1].split()[0]
    key = json.loads(op.as_admin("alice", "key", "propose", "lab", recipient, "--json").stdout)
    op.as_admin("bob", "key", "approve", str(key["id"]))
    clerk = op.add_sftp_user("clerk", "--role", "staff")
    lab = op.add_sftp_user("tech", "--role", "partner", "--partner", "lab")
    (op.root / "rows.csv").write_bytes(MARKER)
    _sftp(op, port, "clerk", clerk, ["put rows.csv /lab/"])
    _sftp(op, port, "tech", lab, ["get rows.csv.age"])
    plain = subprocess.run([require_tool("age"), "-d", "-i", str(op.root / "lab.key"),
                            str(op.root / "rows.csv.age")], capture_output=True, check=True)
    assert plain.stdout == MARKER


def test_parallel_uploads_across_worker_processes(served: tuple[Operator, int]) -> None:
    """Eight staff upload at once through two worker processes sharing one SQLite file."""
    op, port = served
    op("user", "add", "bob", "--role", "admin")
    op("partner", "add", "uni")
    op("keygen", "-o", "uni.key")
    recipient = (op.root / "uni.key").read_text().split("public key: ")[1].split()[0]
    key = json.loads(op.as_admin("alice", "key", "propose", "uni", recipient, "--json").stdout)
    op.as_admin("bob", "key", "approve", str(key["id"]))
    secrets = {f"clerk{n}": op.add_sftp_user(f"clerk{n}", "--role", "staff") for n in range(8)}
    for name in secrets:
        (op.root / f"{name}.csv").write_bytes(os.urandom(1 << 20))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: _sftp(op, port, name, secrets[name],
                                         [f"put {name}.csv /uni/"]), secrets))
    completed = [json.loads(line) for line in op("audit", "log", "--json", "--tag",
                                                 "file:upload:complete").stdout.splitlines()]
    assert sorted(event["details"]["name"] for event in completed) == sorted(
        f"{name}.csv.age" for name in secrets)
    op("audit", "verify")


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_send_and_fetch_through_the_served_gateway(served: tuple[Operator, int]) -> None:
    """The staff and partner guides: `blindpost send` and `blindpost fetch` as installed
    clients, each with its own HOME, against `blindpost serve` (real clock and codes;
    the database does not matter to the clients, so SQLite only)."""
    op, port = served
    op("user", "add", "bob", "--role", "admin")
    op("partner", "add", "uni-research")
    recipient = op("keygen", "-o", "partner.key").stderr.split("Public key: ")[1].split()[0]
    key = json.loads(op.as_admin("alice", "key", "propose", "uni-research", recipient,
                                 "--json").stdout)
    op.as_admin("bob", "key", "approve", str(key["id"]))
    secrets = {"clerk": op.add_sftp_user("clerk", "--role", "staff"),
               "dr-lee": op.add_sftp_user("dr-lee", "--role", "partner", "--partner",
                                          "uni-research")}
    host_key = json.loads(op("host-key", "--json").stdout)["fingerprint"]

    def client(user: str, *args: str) -> dict[str, object]:
        home = op.root / f"home-{user}"
        home.mkdir(exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", args[0], "--host", "127.0.0.1", "--port",
             str(port), "--user", user, "--key", str(op.root / user), "--host-key", host_key,
             "--totp-command", f"echo {pyotp.TOTP(secrets[user]).now()}", "--json",
             *args[1:]],
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)}, cwd=op.root,
            capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        summary: dict[str, object] = json.loads(result.stdout)
        return summary

    (op.root / "extract.csv").write_bytes(MARKER * 50_000)
    (op.root / "empty.csv").write_bytes(b"")
    sent = client("clerk", "send", "uni-research", "extract.csv", "empty.csv")
    assert sent["ok"] is True
    (op.root / "inbox").mkdir()
    fetched = client("dr-lee", "fetch", "-i", "partner.key", "--out", "inbox")
    assert fetched["ok"] is True
    for name in ("extract.csv", "empty.csv"):
        assert (op.root / "inbox" / name).read_bytes() == (op.root / name).read_bytes()
    events = [json.loads(line) for line in op("audit", "log", "--json", "--tag",
                                               "file:upload:complete").stdout.splitlines()]
    assert {e["details"]["encryption"] for e in events} == {"pre-encrypted by the uploader"}
    op("audit", "verify")
