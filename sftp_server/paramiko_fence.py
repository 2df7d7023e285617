"""Every use of paramiko's private internals, in one module.

paramiko's server side offers no hook for what the gateway must know: the moment a
client's signature verified, the first KEXINIT (to require strict key exchange), raw SFTP
requests (to answer them with our statuses), how much window a channel grants back (to
share one receive budget). So the classes below override private methods, and
:func:`budget_channel_window` replaces one on a channel, and nothing else in Blindpost
does; the rest of ``sftp_server`` subclasses them and implements the public hooks they
call (``on_*``, ``handle_request``, ...).

:data:`RELIED_ON` names each private member used and the signature it was written
against (paramiko is pinned, see ``pyproject.toml``). :func:`check_paramiko` compares
them with the installed paramiko; the test suite calls it, so an upgrade that changes
one fails in one obvious place, naming it.
"""

from __future__ import annotations

import contextlib
import inspect
import struct
from collections.abc import Callable
from typing import Any, Protocol

import paramiko
from paramiko import Message, SFTPServer, common
from paramiko.auth_handler import AuthHandler

from gateway.client.transmit import ChannelSender

# "Class.member": the signature it had when this module was written ("" for attributes).
RELIED_ON: dict[str, str] = {
    "Transport._parse_kex_init": "(self, m)",
    "Transport._parse_newkeys": "(self, m)",
    "Transport._send_message": "(self, data)",
    "Transport._sanitize_packet_size": "(self, max_packet_size)",
    "Transport._send_user_message": "(self, data)",
    "Transport._preferred_kex": "",
    "Transport._preferred_ciphers": "",
    "Transport._preferred_macs": "",
    "Transport._preferred_keys": "",
    "Transport._preferred_pubkeys": "",
    "Transport._preferred_compression": "",
    "AuthHandler._generate_key_from_request": "(self, algorithm, keyblob)",
    "AuthHandler._parse_userauth_request": "(self, m)",
    "AuthHandler._send_auth_result": "(self, username, method, result)",
    "SFTPServer._send_server_version": "(self)",
    "SFTPServer._read_all": "(self, n)",
    "SFTPServer._read_packet": "(self)",
    "SFTPServer._process": "(self, t, request_number, msg)",
    "SFTPServer._send_packet": "(self, t, packet)",
    "SFTPServer._write_all": "(self, out)",
    "SFTPServer._send_status": "(self, request_number, code, desc=None)",
    "SFTPServer._log": "(self, level, msg)",
    # Replaced whole (FencedSFTPServer.start_subsystem): a change to it should be looked at.
    "SFTPServer.start_subsystem": "(self, name, transport, channel)",
    "Channel._check_add_window": "(self, n)",
    # Attributes each Channel sets in its constructor (checked on an instance).
    "Channel.lock": "",
    "Channel.closed": "",
    "Channel.eof_received": "",
    "Channel.active": "",
    "Channel.remote_chanid": "",
    "Channel.in_window_size": "",
}
# The head of SSH_FXP_DATA and SSH_FXP_STATUS: length, type, request id, then the data's
# length or the status code.
_REPLY_HEAD = struct.Struct(">IBII")
# What follows the head of SSH_FXP_STATUS with SSH_FX_OK, as paramiko words it: the
# message "Success" and an empty language tag.
_OK_TAIL = struct.pack(">I7sI", 7, b"Success", 0)
# Replies held back at most: a batch of them goes out in one SSH packet.
HELD_REPLIES = 16
_CLASSES: dict[str, type] = {"Transport": paramiko.Transport, "AuthHandler": AuthHandler,
                             "SFTPServer": SFTPServer, "Channel": paramiko.Channel}


def check_paramiko() -> list[str]:
    """Return one line for each relied-on private member that changed or disappeared."""
    problems = []
    for name, expected in RELIED_ON.items():
        owner, _, member = name.partition(".")
        target = getattr(_CLASSES[owner], member, None)
        if target is None and not expected and owner == "Channel":
            target = getattr(paramiko.Channel(0), member, None)
        if target is None:
            problems.append(f"paramiko.{name} is gone (paramiko {paramiko.__version__})")
        elif expected and str(inspect.signature(target)) != expected:
            problems.append(f"paramiko.{name} changed: {inspect.signature(target)} "
                            f"instead of {expected} (paramiko {paramiko.__version__})")
    return problems


def preferred_algorithms(kind: str) -> tuple[str, ...]:
    """Every algorithm of ``kind`` (kex, ciphers, ...) paramiko knows, in its order."""
    return tuple(getattr(paramiko.Transport, f"_preferred_{kind}"))


class ReceiveWindow(Protocol):
    """How much window to grant a channel's client (a ``receive_budget.ChannelWindow``)."""

    def consumed(self, n: int) -> int: ...

    def top_up(self) -> int: ...


def budget_channel_window(channel: paramiko.Channel, window: ReceiveWindow) -> None:
    """Let ``window`` decide what ``channel`` grants its client, and top it up now.

    paramiko grants back every byte the application read once a tenth of the window was
    read (``Channel._check_add_window``, called by ``recv``), so a channel's window
    never changes. Replacing that method on this channel alone lets the gateway grant
    less, or more, than was read. Call it from the transport's thread before the
    channel's reader starts (the subsystem handler's constructor), and only for a
    channel whose window nothing was read from yet.
    """
    def check_add_window(n: int) -> int:
        with channel.lock:
            # paramiko's own condition: a closed channel grants nothing.
            if channel.closed or channel.eof_received or not channel.active:
                return 0
            return window.consumed(n)

    channel._check_add_window = check_add_window
    send_window_adjust(channel, window.top_up())


def send_window_adjust(channel: paramiko.Channel, nbytes: int) -> None:
    """Grant the channel's client ``nbytes`` more (no message for 0), as ``recv`` does."""
    if nbytes <= 0:
        return
    message = Message()
    message.add_byte(common.cMSG_CHANNEL_WINDOW_ADJUST)
    message.add_int(channel.remote_chanid)
    message.add_int(nbytes)
    channel.transport._send_user_message(message)


class FencedTransport(paramiko.Transport):  # type: ignore[misc]  # paramiko ships no type hints.
    """A transport that calls :meth:`on_kex_init` and :meth:`make_auth_handler`, and
    sends no SSH packet larger than :attr:`max_packet_cap` whatever the client asks."""

    max_packet_cap: int | None = None

    def _sanitize_packet_size(self, max_packet_size: int | None) -> int:
        # paramiko takes the packet size a client asks for as it is (up to 32 MiB).
        size = int(super()._sanitize_packet_size(max_packet_size))
        return size if self.max_packet_cap is None else min(size, self.max_packet_cap)

    def on_kex_init(self) -> None:
        """Called after each KEXINIT from the peer was parsed; may raise to refuse it."""

    def make_auth_handler(self) -> AuthHandler:
        """The server-side authentication handler to use instead of paramiko's."""
        return AuthHandler(self)

    def send_disconnect(self, code: int, description: str) -> None:
        """Send SSH_MSG_DISCONNECT with a reason the client shows (paramiko only sends
        its own fixed ones); the caller closes the transport after it."""
        message = Message()
        message.add_byte(paramiko.common.cMSG_DISCONNECT)
        message.add_int(code)
        message.add_string(description)
        message.add_string("en")
        # The client may be gone already; then closing is all that is left.
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._send_message(message)

    def _parse_kex_init(self, m: Message) -> Any:
        result = super()._parse_kex_init(m)
        self.on_kex_init()
        return result

    def _parse_newkeys(self, m: Message) -> Any:
        # paramiko creates its server-side AuthHandler here, after the first NEWKEYS;
        # creating ours at the same moment keeps its timing and swaps in the checks.
        if self.server_mode and getattr(self, "auth_handler", None) is None:
            self.auth_handler = self.make_auth_handler()
        return super()._parse_newkeys(m)


class FencedAuthHandler(AuthHandler):  # type: ignore[misc]  # paramiko ships no type hints.
    """Server-side authentication that reports the moment a client's signature verified.

    Relies on paramiko 5.1.0's ``AuthHandler._parse_userauth_request``: for a signed
    public-key request it builds the key with ``_generate_key_from_request``, calls
    ``check_auth_publickey``, and then ``key.verify_ssh_sig(session_blob, sig)``; an
    unsigned probe returns (``PK_OK``) before any verification. Wrapping
    ``verify_ssh_sig`` on that key object makes :meth:`on_signature_verified` run inside
    the very call that verified the signature. Whether the key is then accepted is
    decided by :meth:`filter_auth_result`, which sees the result before it is sent: a
    refusal by the rules is not reported to paramiko as a bad signature (which it would
    log as "invalid signature").
    """

    def on_signature_verified(self, _key: paramiko.PKey) -> None:
        """A signature by the key over this session verified."""

    def on_userauth_request(self) -> None:
        """Called before each USERAUTH_REQUEST is handled."""

    def filter_auth_result(self, _method: str, result: int) -> int:
        """The result to send for an authentication method; may turn success into failure,
        or end the connection instead (then nothing is sent)."""
        return result

    def farewell(self) -> str | None:
        """A message to end the connection with instead of sending a failed result."""
        return None

    def send_banner(self, text: str) -> None:
        """Show ``text`` to the user now (SSH_MSG_USERAUTH_BANNER, allowed until sign-in)."""
        message = Message()
        message.add_byte(common.cMSG_USERAUTH_BANNER)
        message.add_string(text)
        message.add_string("en")
        self.transport._send_message(message)

    def disconnect(self, text: str) -> None:
        """End the connection with ``text`` (OpenSSH prints "Received disconnect ...: text")."""
        if not self.transport.is_active():
            return
        self.transport.send_disconnect(common.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, text)
        self.transport.close()

    def _generate_key_from_request(self, algorithm: str, keyblob: bytes) -> Any:
        key = super()._generate_key_from_request(algorithm, keyblob)
        if key is not None:
            key.verify_ssh_sig = self._witness(key, key.verify_ssh_sig)
        return key

    def _witness(self, key: paramiko.PKey,
                 verify: Callable[[bytes, Message], bool]) -> Callable[..., bool]:
        def verify_then_report(data: bytes, msg: Message) -> bool:
            if not verify(data, msg):
                return False
            self.on_signature_verified(key)
            return True
        return verify_then_report

    def _parse_userauth_request(self, m: Message) -> None:
        self.on_userauth_request()
        super()._parse_userauth_request(m)

    def _send_auth_result(self, username: str, method: str, result: int) -> None:
        result = self.filter_auth_result(method, result)
        text = self.farewell() if result != common.AUTH_SUCCESSFUL else None
        if text is not None:
            # Instead of the failure: a client that has no method left would give up on
            # the failure and never read a disconnect sent after it.
            self.disconnect(text)
            return
        if self.transport.is_active():
            super()._send_auth_result(username, method, result)


class FencedSFTPServer(SFTPServer):  # type: ignore[misc]  # paramiko ships no type hints.
    """paramiko's SFTP wire server, with raw requests and replies reachable publicly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Replies held back by hold_ok, in order.
        self._held_replies: list[bytes] = []

    def start_subsystem(self, _name: str, _transport: paramiko.Transport,
                        channel: paramiko.Channel) -> None:
        """paramiko's request loop, except that each request is dropped before the next
        is read: paramiko's loop keeps the last one in its variables meanwhile, so a
        session waiting to read its next request (in :meth:`before_write`, say) held
        its last write (255 KiB) for as long as it waited."""
        self.sock = channel
        self._send_server_version()
        self.server.session_started()
        while self._serve_one():
            pass

    def _serve_one(self) -> bool:
        """Read and answer one request; False when the session is over."""
        try:
            kind, data = self._read_packet()
        except EOFError:
            self._log(common.DEBUG, "EOF -- end of session")
            return False
        except Exception as exc:  # noqa: BLE001  # paramiko's loop ends the session on any.
            self._log(common.DEBUG, f"Exception on channel: {exc}")
            self._log(common.DEBUG, paramiko.util.tb_strings())
            return False
        msg = Message(data)
        request_number = msg.get_int()
        try:
            self._process(kind, request_number, msg)
        except Exception as exc:  # noqa: BLE001  # As in paramiko's loop: answered, logged.
            self._log(common.DEBUG, f"Exception in server processing: {exc}")
            self._log(common.DEBUG, paramiko.util.tb_strings())
            # As paramiko does: some kind of failure reply, at least.
            with contextlib.suppress(Exception):
                self._send_status(request_number, paramiko.sftp.SFTP_FAILURE)
        return True

    def server_version_reply(self, client_version: int) -> Message:
        """The SSH_FXP_VERSION body answering the client's INIT."""
        raise NotImplementedError

    def handle_request(self, kind: int, request_number: int, msg: Message) -> None:
        """Handle one request; :meth:`dispatch` is paramiko's own handling."""
        self.dispatch(kind, request_number, msg)

    def dispatch(self, kind: int, request_number: int, msg: Message) -> None:
        """paramiko's handling of a request."""
        super()._process(kind, request_number, msg)

    def send_status(self, request_number: int, code: int, message: str | None = None) -> None:
        self._send_status(request_number, code, message)

    def hold_ok(self, request_number: int) -> None:
        """Answer SSH_FX_OK, held back while more requests are already received, so that
        the replies to a run of writes go out together in one SSH packet (one each cost
        the session's thread about a sixth of an upload: a packet built in Python and a
        system call). Whatever is sent next, or a wait for input, sends them first."""
        held = self._held_replies
        held.append(_REPLY_HEAD.pack(_REPLY_HEAD.size - 4 + len(_OK_TAIL),
                                     paramiko.sftp.CMD_STATUS, request_number,
                                     paramiko.sftp.SFTP_OK) + _OK_TAIL)
        if len(held) >= HELD_REPLIES or not self.sock.recv_ready():
            self.send_held()

    def send_held(self) -> None:
        """Send the replies :meth:`hold_ok` held back."""
        held = self._held_replies
        if held:
            data = b"".join(held)
            held.clear()
            self._send_view(memoryview(data))

    def _write_all(self, out: bytes) -> None:
        # paramiko's one way out for every reply: replies keep the order of the requests.
        self.send_held()
        super()._write_all(out)

    def send_packet(self, kind: int, msg: Message) -> None:
        self._send_packet(kind, msg)

    def send_data(self, request_number: int, data: bytes) -> None:
        """Answer a read with SSH_FXP_DATA, sending ``data`` from where it is.

        paramiko's reply copies a read four times (into a message, out of it, behind the
        length, and the unsent rest after every partial send) and its packetizer about
        six more, and a download waiting for the client's window held those copies:
        about 1 MiB per download of 255 KiB reads, which grew a node by that much per
        session. Here each SSH packet is built and sealed in one pass once the window
        has room for it (:class:`~gateway.client.transmit.ChannelSender`), as large as
        the client's packet size allows: a reply that fits one SSH packet goes as one,
        which Blindpost's client (asking for reads that do) hands on as a view of it.
        """
        self.send_held()
        header = _REPLY_HEAD.pack(_REPLY_HEAD.size - 4 + len(data), paramiko.sftp.CMD_DATA,
                                  request_number, len(data))
        try:
            ChannelSender(self.sock).send(header, memoryview(data))
        except OSError:
            raise EOFError from None

    def _send_view(self, view: memoryview) -> None:
        while view:
            sent = self.sock.send(view)
            if sent <= 0:
                raise EOFError
            view = view[sent:]

    def max_packet_length(self) -> int:
        """The largest request accepted; longer ones end the session."""
        raise NotImplementedError

    def _send_server_version(self) -> int:
        kind, data = self._read_packet()
        if kind != paramiko.sftp.CMD_INIT:
            raise paramiko.sftp.SFTPError("Incompatible sftp protocol")
        client_version = int.from_bytes(data[:4], "big")
        self._send_packet(paramiko.sftp.CMD_VERSION, self.server_version_reply(client_version))
        return client_version

    def _read_all(self, n: int) -> bytes:
        # paramiko's version grows one bytes object (quadratic on 255 KiB writes).
        chunks, remaining = [], n
        while remaining > 0:
            if not self.sock.recv_ready():
                # About to wait for the client, which may be waiting for these.
                self.send_held()
            chunk = self.sock.recv(remaining)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _read_packet(self) -> tuple[int, bytes]:
        size = int.from_bytes(self._read_all(4), "big")
        if size > self.max_packet_length():
            raise paramiko.sftp.SFTPError(f"packet of {size} bytes exceeds the advertised limit")
        if not size:
            return 0, b""
        # The type apart from the rest: cutting it off a whole packet copied each write.
        kind = self._read_all(1)[0]
        if kind == paramiko.sftp.CMD_WRITE:
            # The write's data is still in the channel (or with the client): whatever it
            # must wait for, the server waits for here, holding none of it.
            self.before_write()
        return kind, self._read_all(size - 1)

    def before_write(self) -> None:
        """Called when the next request is a write, before its data is read."""

    @staticmethod
    def write_request(msg: Message) -> tuple[bytes, int, memoryview]:
        """The handle, offset and data of an SSH_FXP_WRITE whose request id was read.

        The data is a view of the packet (paramiko's ``get_binary`` copies it): an upload
        waiting for the store holds its write once, not three times.
        """
        packet = memoryview(msg.asbytes())
        at = msg.packet.tell()
        handle_end = at + 4 + int.from_bytes(packet[at:at + 4], "big")
        offset = int.from_bytes(packet[handle_end:handle_end + 8], "big")
        start = handle_end + 12
        length = int.from_bytes(packet[handle_end + 8:start], "big")
        if start + length > len(packet):
            raise paramiko.sftp.SFTPError("write request shorter than its data length")
        return bytes(packet[at + 4:handle_end]), offset, packet[start:start + length]

    def _process(self, t: int, request_number: int, msg: Message) -> None:
        self.handle_request(t, request_number, msg)
