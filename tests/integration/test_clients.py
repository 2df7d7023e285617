"""`blindpost send`, `fetch` and `trust` as real programs against a running gateway.

The gateway runs in this process (real SFTP server on an ephemeral port, fake clock for
the one-time codes); the clients run as `python -m gateway.cli` subprocesses with their
own HOME, so pins and the fetched record are theirs alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from gateway import envelope
from gateway.client.connection import Credentials, connect
from gateway.client.hostkeys import Endpoint, PinnedHostKeys, fingerprint
from gateway.client.sftp import OPEN_READ, WINDOW
from gateway.db.models import Role
from gateway.errors import AuthenticationError
from tests.unit.sftp_server.harness import (
    OPERATOR,
    Installation,
    User,
    audit_events,
    openssh_sftp,
)

pytestmark = pytest.mark.integration
MIB = 1 << 20


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("clients"))
    for slug, limit in (("uni", None), ("lim", 1), ("rot", None), ("raw", None)):
        installation.add_partner(slug, post_quantum=slug != "rot", max_downloads=limit)
    installation.start()
    installation.add_user("clerk", Role.STAFF)
    for name, partner in (("lee", "uni"), ("ann", "lim"), ("ron", "rot"), ("rae", "raw")):
        installation.add_user(name, Role.PARTNER, partner=partner)
    yield installation
    installation.close()


class Client:
    """Runs `blindpost` as one user with one HOME, the code from --totp-command."""

    def __init__(self, inst: Installation, user: User, home: Path) -> None:
        self.inst = inst
        self.user = user
        self.home = home
        home.mkdir(exist_ok=True)

    def run(self, command: str, *args: str, port: int | None = None, code: str | None = None,
            stdin: str | None = None, connect: bool = True) -> subprocess.CompletedProcess[str]:
        options: list[str] = []
        if connect:
            options = ["--host", "127.0.0.1", "--port", str(port or self.inst.port),
                       "--user", self.user.username, "--key", str(self.user.key_path)]
            if stdin is None:
                options += ["--totp-command",
                            f"echo {code or self.inst.code(self.user)}"]
        return subprocess.run([sys.executable, "-m", "gateway.cli", command, *options, *args],
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                   "HOME": str(self.home)},
                              input=stdin, capture_output=True, text=True, timeout=180,
                              cwd=self.home, check=False)

    def json(self, command: str, *args: str, **kwargs: object) -> dict[str, object]:
        result = self.run(command, "--json", *args, **kwargs)  # type: ignore[arg-type]
        assert result.stdout, result.stderr
        summary: dict[str, object] = json.loads(result.stdout)
        summary["exit"] = result.returncode
        summary["stderr"] = result.stderr
        return summary


def _identity_file(path: Path, identity: envelope.Identity) -> Path:
    path.write_text(identity.to_secret_string() + "\n")
    return path


def _logins(inst: Installation, user: User) -> int:
    return sum(1 for e in audit_events(inst.app, "auth:login:success")
               if e["actor"] == user.username)


def test_send_then_fetch_gives_identical_bytes(inst: Installation, tmp_path: Path) -> None:
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    lee = Client(inst, inst.users["lee"], tmp_path / "lee")
    sizes = {"empty.csv": 0, "one.csv": 1, "chunk.bin": 64 * 1024, "odd.bin": MIB + 3,
             "big.bin": 100 * MIB}
    for name, size in sizes.items():
        (clerk.home / name).write_bytes(os.urandom(size))
    before = _logins(inst, clerk.user)
    sent = clerk.json("send", "uni", *sizes)
    assert sent["exit"] == 0, sent
    assert _logins(inst, clerk.user) == before + 1, "one connection, one code"
    assert "pinned the keys of uni on first use" in str(sent["stderr"])
    fingerprint_ = inst.identities["uni"].recipient.fingerprint
    assert sent["recipients"] == [fingerprint_]
    files = sent["files"]
    assert isinstance(files, list)
    assert [(f["file"], f["ok"], f["size"]) for f in files] == [
        (name, True, size) for name, size in sizes.items()]
    uploads = audit_events(inst.app, "file:upload:complete")[-len(sizes):]
    assert {u["details"]["encryption"] for u in uploads} == {"pre-encrypted by the uploader"}
    assert {tuple(u["details"]["declared_recipients"]) for u in uploads} == {(fingerprint_,)}
    assert [u["details"]["sha256"] for u in uploads] == [f["sha256"] for f in files]

    out = lee.home / "inbox"
    out.mkdir()
    key = _identity_file(lee.home / "uni.key", inst.identities["uni"])
    fetched = lee.json("fetch", "-i", str(key), "--out", str(out))
    assert fetched["exit"] == 0, fetched
    for name in sizes:
        assert (out / name).read_bytes() == (clerk.home / name).read_bytes(), name
        assert (out / name).stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.iterdir()) == sorted(sizes), "no partial or temp files"

    again = lee.run("fetch", "-i", str(key), "--out", str(out))
    assert (again.returncode, again.stdout) == (0, "nothing new in the inbox\n")
    everything = lee.json("fetch", "-i", str(key), "--out", str(out), "--all", "--overwrite",
                          "--keep-ciphertext")
    assert everything["exit"] == 0, everything
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*sizes, *(f"{name}.age" for name in sizes)])


def test_a_changed_key_stops_send_until_trust(inst: Installation, tmp_path: Path) -> None:
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    (clerk.home / "first.csv").write_bytes(b"first\n")
    (clerk.home / "second.csv").write_bytes(b"second\n")
    assert clerk.run("send", "rot", "first.csv").returncode == 0
    old = inst.identities["rot"]
    new = envelope.generate_identity(post_quantum=False)
    # A rotation: the new key first, so revoking the old one (no longer the last) keeps
    # the files waiting for the partner.
    proposed = inst.app.keys.propose(inst.account_actor("root-admin"), partner="rot",
                                     recipient=str(new.recipient))
    inst.app.keys.approve(inst.account_actor("second-admin"), key_id=proposed.id)
    inst.app.keys.revoke(inst.account_actor("root-admin"), key_id=_key_id(inst, old))

    refused = clerk.run("send", "rot", "second.csv")
    assert refused.returncode == 1
    assert f"removed  {old.recipient.fingerprint}" in refused.stderr
    assert f"added    {new.recipient.fingerprint}" in refused.stderr
    assert "blindpost trust rot" in refused.stderr
    assert [f.name for f in inst.app.transfers.inbox(inst.actor(inst.users["ron"]))] == [
        "first.csv.age"]

    declined = clerk.run("trust", "rot", stdin="n\n", connect=False)
    assert declined.returncode == 1
    assert f"added    {new.recipient.fingerprint}" in declined.stdout
    assert clerk.run("send", "rot", "second.csv").returncode == 1
    accepted = clerk.run("trust", "rot", stdin="y\n", connect=False)
    assert accepted.returncode == 0, accepted.stderr
    resent = clerk.run("send", "rot", "second.csv")
    assert resent.returncode == 0, resent.stderr

    ron = Client(inst, inst.users["ron"], tmp_path / "ron")
    key = _identity_file(ron.home / "new.key", new)
    fetched = ron.json("fetch", "-i", str(key), "--out", str(ron.home))
    by_name = {f["name"]: f for f in fetched["files"]}  # type: ignore[union-attr]
    assert by_name["second.csv.age"]["ok"]
    assert (ron.home / "second.csv").read_bytes() == b"second\n"
    assert not by_name["first.csv.age"]["ok"], "the first file is for the revoked key"


def _key_id(inst: Installation, identity: envelope.Identity) -> int:
    return next(k.id for k in inst.app.keys.all(OPERATOR)
                if k.fingerprint == identity.recipient.fingerprint)


def test_a_changed_host_key_is_refused_before_signing_in(inst: Installation,
                                                         tmp_path: Path) -> None:
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    (clerk.home / "a.csv").write_bytes(b"rows\n")
    pins = clerk.home / ".config" / "blindpost" / "known_hosts"
    pins.parent.mkdir(parents=True)
    # Another Ed25519 key pinned for this gateway: what an interceptor would present.
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(tmp_path / "other")], check=True)
    assert other.returncode == 0
    other_key = (tmp_path / "other.pub").read_text().split()[1]
    pins.write_text(f"[127.0.0.1]:{inst.port} ssh-ed25519 {other_key}\n")
    failures = len(audit_events(inst.app, "auth:login:failure"))
    refused = clerk.run("send", "uni", "a.csv")
    assert refused.returncode == 1
    assert "does not match" in refused.stderr

    wrong = clerk.run("send", "--host-key", "SHA256:" + "A" * 43, "uni", "a.csv")
    assert wrong.returncode == 1
    assert "the --host-key you gave" in wrong.stderr
    server_key = fingerprint(_server_key(inst))
    right = clerk.run("send", "--host-key", server_key, "uni", "a.csv")
    assert right.returncode == 0, right.stderr
    listed = clerk.run("send", "--known-hosts", str(inst.known_hosts()), "uni", "a.csv")
    assert listed.returncode == 0, listed.stderr
    # The refused runs hung up before offering the account's key: the gateway saw only
    # connections that never named an account.
    refused_runs = audit_events(inst.app, "auth:login:failure")[failures:]
    assert {e["actor"] for e in refused_runs} <= {"(none)"}


def _server_key(inst: Installation) -> object:
    import paramiko

    return paramiko.Ed25519Key.from_private_key_file(str(inst.settings.host_key_path))


class CuttingProxy:
    """Forwards one connection to the gateway and cuts it once ``limit`` bytes went down."""

    def __init__(self, target: int, limit: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._target, self._limit = target, limit
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self._target))
        threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
        self._pump(upstream, client, self._limit)
        for sock in (client, upstream, self._listener):
            sock.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while (data := source.recv(65536)) and (limit is None or sent < limit):
                sink.sendall(data)
                sent += len(data)
        except OSError:
            return
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_an_interrupted_download_resumes_under_a_limit_of_one(inst: Installation,
                                                               tmp_path: Path) -> None:
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    ann = Client(inst, inst.users["ann"], tmp_path / "ann")
    original = os.urandom(16 * MIB)
    (clerk.home / "cohort.bin").write_bytes(original)
    assert clerk.run("send", "lim", "cohort.bin").returncode == 0
    key = _identity_file(ann.home / "lim.key", inst.identities["lim"])
    host_key = fingerprint(_server_key(inst))

    proxy = CuttingProxy(inst.port, limit=8 * MIB)
    cut = ann.json("fetch", "--host-key", host_key, "-i", str(key), port=proxy.port)
    assert cut["exit"] == 1
    [failed] = cut["files"]  # type: ignore[misc]
    assert not failed["ok"]
    assert not (ann.home / "cohort.bin").exists()
    [partial] = [p for p in ann.home.iterdir() if p.name.endswith(".part")]
    assert 0 < partial.stat().st_size < len(original)
    _wait_until_listed(inst, inst.users["ann"], "cohort.bin.age")

    resumed = ann.json("fetch", "--host-key", host_key, "-i", str(key))
    assert resumed["exit"] == 0, resumed
    [done] = resumed["files"]  # type: ignore[misc]
    assert done["resumed_at"] > 0
    assert (ann.home / "cohort.bin").read_bytes() == original
    assert not partial.exists()
    complete = audit_events(inst.app, "file:download:complete")[-1]["details"]
    assert complete["resumed_at"] == done["resumed_at"]
    assert sum(1 for e in audit_events(inst.app, "file:download:complete")
               if e["details"]["name"] == "cohort.bin.age") == 1, "the limit of one was used once"
    assert inst.app.transfers.inbox(inst.actor(inst.users["ann"])) == [], "limit reached"


def _wait_until_listed(inst: Installation, user: User, name: str) -> None:
    """The gateway gives an interrupted download back once it sees the connection gone."""
    deadline = time.monotonic() + 30
    while name not in [f.name for f in inst.app.transfers.inbox(inst.actor(user))]:
        assert time.monotonic() < deadline, "the interrupted download was never given back"
        time.sleep(0.05)


def test_fetch_tells_why_a_begun_file_is_gone(inst: Installation, tmp_path: Path) -> None:
    """Issue 23: a download that began and whose file then left the inbox is told, once,
    with the gateway's reason; the run still succeeds."""
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    lee = Client(inst, inst.users["lee"], tmp_path / "lee")
    (clerk.home / "later.csv").write_bytes(b"id\n1\n")
    assert clerk.run("send", "uni", "later.csv").returncode == 0
    wrong = _identity_file(lee.home / "wrong.key", envelope.generate_identity())
    assert lee.run("fetch", "-i", str(wrong)).returncode == 1  # Begun, not fetched.
    entry = next(f for f in inst.app.transfers.inbox(inst.actor(inst.users["lee"]))
                 if f.name == "later.csv.age")
    inst.app.transfers.withdraw_file(OPERATOR, file_id=entry.id)
    right = _identity_file(lee.home / "uni.key", inst.identities["uni"])
    told = lee.run("fetch", "-i", str(right))
    assert told.returncode == 0, told.stdout + told.stderr
    assert ("GONE    later.csv.age: later.csv.age is gone: it was withdrawn; ask the sender "
            "if it should be sent again") in told.stdout
    again = lee.run("fetch", "-i", str(right))
    assert "later.csv.age" not in again.stdout  # Told once.


def test_wrong_identity_is_a_clear_error_and_no_plaintext(inst: Installation,
                                                          tmp_path: Path) -> None:
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    lee = Client(inst, inst.users["lee"], tmp_path / "lee")
    (clerk.home / "secret.csv").write_bytes(b"PATIENT-4711\n" * 1000)
    assert clerk.run("send", "uni", "secret.csv").returncode == 0
    wrong = _identity_file(lee.home / "wrong.key", envelope.generate_identity())
    result = lee.run("fetch", "-i", str(wrong))
    assert result.returncode == 1
    assert "FAILED  secret.csv.age: none of the identities (-i) opens this file" in result.stdout
    leftovers = [p.name for p in lee.home.iterdir() if "secret" in p.name]
    assert all(name.endswith(".part") and name.startswith(".secret.csv.age.")
               for name in leftovers), leftovers
    for path in lee.home.iterdir():
        if path.is_file():
            assert b"PATIENT-4711" not in path.read_bytes()


def test_one_time_code_sources(inst: Installation, tmp_path: Path) -> None:
    lee = Client(inst, inst.users["lee"], tmp_path / "lee")
    key = _identity_file(lee.home / "uni.key", inst.identities["uni"])
    piped = lee.run("fetch", "-i", str(key), stdin=inst.code(lee.user) + "\n")
    assert piped.returncode == 0, piped.stderr
    nothing = lee.run("fetch", "-i", str(key), stdin="")
    assert nothing.returncode == 1
    assert "use --totp-command" in nothing.stderr
    broken = lee.run("fetch", "-i", str(key), "--totp-command", "false")
    assert broken.returncode == 1
    assert "--totp-command failed (exit 1)" in broken.stderr
    wrong = lee.run("fetch", "-i", str(key), code="000000")
    assert wrong.returncode == 1
    assert "refused the one-time code" in wrong.stderr
    assert "wrong code. Enter the code your app shows now." in wrong.stderr


def test_a_wrong_code_is_explained_and_a_fresh_one_asked(inst: Installation,
                                                        tmp_path: Path) -> None:
    lee = Client(inst, inst.users["lee"], tmp_path / "lee")
    key = _identity_file(lee.home / "uni.key", inst.identities["uni"])
    before = _logins(inst, lee.user)
    second = lee.run("fetch", "-i", str(key), stdin="000000\n" + inst.code(lee.user) + "\n")
    assert second.returncode == 0, second.stderr
    assert "blindpost: wrong code. Enter the code your app shows now." in second.stderr
    assert _logins(inst, lee.user) == before + 1


def test_usage_errors_exit_2(inst: Installation, tmp_path: Path) -> None:
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    (clerk.home / "a.csv").write_bytes(b"x")
    assert clerk.run("send", "uni", "missing.csv", connect=True).returncode == 2
    both = clerk.run("send", "--known-hosts", str(inst.known_hosts()), "--host-key",
                     "SHA256:" + "A" * 43, "uni", "a.csv")
    assert both.returncode == 2
    unknown = clerk.json("send", "nobody", "a.csv")
    assert unknown["exit"] == 2
    assert unknown == {**unknown, "ok": False,
                       "error": "the gateway has no active partner 'nobody'"}
    nothing = clerk.run("trust", "uni", connect=False)
    assert nothing.returncode == 2
    assert "no change of uni's keys is waiting" in nothing.stderr


def test_stock_clients_see_the_list_and_ignore_the_attributes(inst: Installation,
                                                              tmp_path: Path) -> None:
    clerk = inst.users["clerk"]
    listing = openssh_sftp(inst, clerk, ["ls -l /.recipients", "get /.recipients/uni rl.txt",
                                         "ls -l /uni"], code=inst.code(clerk))
    assert listing.returncode == 0, listing.stderr
    assert "uni" in listing.stdout
    published = (inst.root / "rl.txt").read_text()
    assert published.startswith("# blindpost recipients v1\n# partner: uni\n")
    assert inst.identities["uni"].recipient.fingerprint in published
    denied = openssh_sftp(inst, clerk, ["put rl.txt /.recipients/uni"], code=inst.code(clerk))
    assert denied.returncode != 0


def test_pre_encrypted_upload_for_other_keys_is_refused_with_the_reason(
        inst: Installation, tmp_path: Path) -> None:
    clerk = inst.users["clerk"]
    classic = envelope.generate_identity(post_quantum=False).recipient
    (inst.root / "wrong.csv.age").write_bytes(envelope.encrypt_bytes(b"rows", [classic]))
    result = openssh_sftp(inst, clerk, ["put wrong.csv.age /uni/"], code=inst.code(clerk))
    assert result.returncode != 0
    assert 'write remote "/uni/wrong.csv.age": Permission denied' in result.stderr
    aborted = audit_events(inst.app, "file:upload:aborted")[-1]["details"]
    assert aborted["name"] == "wrong.csv.age"
    assert "X25519 stanzas, but the partner's approved keys are mlkem768x25519" in (
        aborted["reason"])


def test_portal_code_signs_in_with_key_and_code_and_shows_a_fresh_code(
        inst: Installation, tmp_path: Path) -> None:
    lee = Client(inst, inst.users["lee"], tmp_path / "lee")
    first = lee.json("portal-code")
    assert first["exit"] == 0 and first["account"] == "lee", first
    shown = lee.run("portal-code")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Portal enrolment code for lee: ")
    second = shown.stdout.split(": ", 1)[1].split()[0]
    assert second != first["code"], "each read issues a new code"
    issued = [e for e in audit_events(inst.app, "portal:enrolment:issue")
              if e["actor"] == "lee"]
    assert [e["details"]["replaced"] for e in issued[-2:]] == [False, True]
    # The replaced code enrols nothing; the new one is taken once, at the portal.
    with pytest.raises(AuthenticationError, match="enrolment code refused"):
        inst.app.console_auth.code_sign_in(username="lee", code=inst.code(lee.user),
                                           source="127.0.0.1", enrolment=str(first["code"]))
    opened = inst.app.console_auth.code_sign_in(username="lee", code=inst.code(lee.user),
                                                source="127.0.0.1", enrolment=second)
    assert opened.session.stage.value == "passkey"
    # Staff get one too: their upload page's first passkey rests on their key as well.
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    staff = clerk.json("portal-code")
    assert staff["exit"] == 0 and staff["account"] == "clerk", staff


class _Recording:
    """A channel that remembers every block it received."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self.blocks: list[bytes] = []
        self.sends = 0

    def sendall(self, data: bytes | memoryview) -> None:
        self.sends += 1
        self._channel.sendall(data)

    def recv(self, nbytes: int) -> bytes:
        block = self._channel.recv(nbytes)
        self.blocks.append(block)
        return block


def test_downloads_arrive_a_reply_per_packet_and_reads_go_in_batches(
        inst: Installation, tmp_path: Path) -> None:
    """Against the gateway: the client's socket sends at once (Nagle's algorithm off:
    a batch of reads otherwise waited for the gateway's acknowledgement, and a 256 MiB
    download took 2 s instead of 1), its reads go out several to an SSH packet, and the
    gateway sends each reply in one SSH packet, which the client hands on as a view of
    what it received (a reply in two packets had to be joined, a copy of every byte)."""
    clerk = Client(inst, inst.users["clerk"], tmp_path / "clerk")
    data = os.urandom(24 * MIB)
    (clerk.home / "views.bin").write_bytes(data)
    assert clerk.run("send", "raw", "views.bin").returncode == 0
    rae = inst.users["rae"]
    credentials = Credentials(rae.username, paramiko.PKey.from_path(rae.key_path),
                              lambda: inst.code(rae))
    with connect(Endpoint("127.0.0.1", inst.port), credentials=credentials,
                 host_keys=PinnedHostKeys(tmp_path / "hosts"), notice=lambda _: None) as conn:
        transport = conn._transport
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        session = conn.sftp
        handle = session.open("/views.bin.age", OPEN_READ)
        size = session.stat("/views.bin.age").size
        assert size is not None
        recording = _Recording(session._channel)
        session._channel = recording
        pieces = list(session.read_stream(handle, 0, size))
        session.close(handle)
    reads = len(pieces)
    assert reads > 2 * WINDOW, "enough reads to refill the window many times"
    assert recording.sends <= 1 + reads // 8, "reads are sent in batches"
    assert all(any(piece.obj is block for block in recording.blocks) for piece in pieces), \
        "every reply is a view of one received packet"
    sealed = b"".join(pieces)
    assert envelope.decrypt_bytes(sealed, [inst.identities["raw"]]) == data

