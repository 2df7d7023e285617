"""Accepting connections: limits, the login grace timer, the idle timeout, the drain,
revocation.

paramiko has no login grace timer and no idle timeout; each connection gets a supervisor
thread that provides both, and that audits a connection which ends without signing in.
The grace timer starts at accept, so a client that dribbles its banner or handshake
cannot hold a connection past it. Admission (:mod:`sftp_server.admission`) keeps its
counts in shared memory so that the limits hold across worker processes.

Stopping drains: the listener stops accepting, connections that are not signed in or
have nothing open are closed at once, and sessions with a file open get
``shutdown_drain_seconds`` to finish it; what is still open then is aborted (audited,
nothing left visible).

Signed-in sessions end when their sign-in stops holding: every few seconds each process
asks the gateway, in one query for all its sessions, which accounts were disabled (or
whose partner was); the database is the one place every worker and node shares.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import socket
import threading
import time

import paramiko
from paramiko.ssh_exception import SSHException

from gateway import randomness
from gateway.app import App
from gateway.config import MIN_CHANNEL_WINDOW_KIB, address_in_use, parse_listen
from gateway.errors import GatewayError, StartupError, UsageError
from sftp_server.admission import Admission, Ticket
from sftp_server.auth import LoginGate
from sftp_server.budget import MemoryBudget
from sftp_server.proxy import NoHeaderError, ProxyHeaderError, ProxyProtocol, read_header
from sftp_server.receive_budget import ReceiveBudget
from sftp_server.server import Activity, BlindpostSFTPServer
from sftp_server.transport import BlindpostTransport, quiet_paramiko

log = logging.getLogger(__name__)

MIB = 1 << 20
POLL_SECONDS = 0.25
ACCEPT_POLL_SECONDS = 0.5
# After the drain, how long closing sessions may take to abort what they had open.
CLEANUP_SECONDS = 3.0
# How often each process re-reads the state of its signed-in accounts.
SESSION_CHECK_SECONDS = 2.0


class Drain:
    """The stop request a listener shares with its connections, and its deadline."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        # Shared with every session's Activity, which refuses new files once it is set.
        self.event = threading.Event()
        self.deadline = math.inf

    def start(self) -> None:
        """Stop accepting and start the drain; later calls change nothing."""
        if not self.event.is_set():
            self.deadline = time.monotonic() + self._seconds
            self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early when the drain starts."""
        return self.event.wait(timeout)

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


def bind_listener(listen: str, *, reuse_port: bool, port: int | None = None) -> socket.socket:
    """A listening TCP socket on ``HOST:PORT`` (``port`` overrides, e.g. after port 0).

    Raises :class:`StartupError` when the host refuses the address (in use, not one of
    its own) and :class:`UsageError` when the host name is unknown.
    """
    host, configured = parse_listen(listen, key="sftp_listen")
    address = (host, configured if port is None else port)
    if reuse_port and port is None and configured != 0:
        # SO_REUSEPORT would let this bind share a port that another SO_REUSEPORT server
        # (a second Blindpost) holds, the kernel then splitting connections between the
        # two; an exclusive bind first finds the port busy.
        _bind(listen, address, reuse_port=False).close()
    return _bind(listen, address, reuse_port=reuse_port)


def _bind(listen: str, address: tuple[str, int], *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Each worker process binds its own socket; the kernel spreads connections.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except (OSError, TypeError, UnicodeError) as exc:
        sock.close()
        raise _bind_error(listen, exc) from exc
    return sock


def _bind_error(listen: str, exc: Exception) -> GatewayError:
    shown = listen if listen.isprintable() else repr(listen)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return StartupError(address_in_use("sftp_listen", listen))
    if isinstance(exc, socket.gaierror | TypeError | UnicodeError):
        return UsageError(f"cannot listen on {shown}: unknown host")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StartupError(f"cannot listen on {shown}: {reason}")


class Connection:
    """One client: SSH handshake, sign-in within the grace time, then the SFTP session."""

    def __init__(self, app: App, client: socket.socket, source: str, *,
                 host_key: paramiko.PKey, drain: Drain, ticket: Ticket,
                 memory: MemoryBudget, receive: ReceiveBudget) -> None:
        self._accepted = time.monotonic()
        self._app = app
        self._settings = app.settings
        self._client = client
        self.source = source
        self._host_key = host_key
        self._drain = drain
        self.ticket = ticket
        self._memory = memory
        self._receive = receive
        self._transport: BlindpostTransport | None = None
        self._gate: LoginGate | None = None

    @property
    def account_id(self) -> int | None:
        """The signed-in account, once the sign-in completed."""
        gate = self._gate
        if gate is None or not gate.signed_in.is_set() or gate.actor is None:
            return None
        return gate.actor.account_id

    def end(self, reason: str) -> None:
        """End a signed-in session whose sign-in no longer holds (from another thread)."""
        gate = self._gate
        if gate is not None and gate.end_reason is None:
            gate.end_reason = reason
            gate.hangup.set()

    def run(self) -> None:
        """Serve the connection to its end; never raises."""
        try:
            self._serve()
        except Exception:
            log.exception("connection from %s failed", self.source)
        finally:
            self.close()

    def close(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.close()
        else:
            self._client.close()

    def _serve(self) -> None:
        self._client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Channels open with the smallest window; an SFTP session's is raised to its
        # share of the receive budget as the subsystem starts, before the client's first
        # request. A channel that never starts one holds no more than this.
        transport = self._transport = BlindpostTransport(
            self._client, window=MIN_CHANNEL_WINDOW_KIB << 10)
        transport.add_server_key(self._host_key)
        activity = Activity(draining=self._drain.event)
        session_buffer = self._memory.child(self._settings.sftp_session_buffer_mib * MIB,
                                            scope="session")
        transport.set_subsystem_handler(
            "sftp", BlindpostSFTPServer, activity=activity, budget=session_buffer,
            reorder_limit=self._settings.sftp_reorder_buffer_mib * MIB, receive=self._receive)
        # paramiko's own timeouts for each step; the grace time bounds them all together.
        transport.banner_timeout = transport.handshake_timeout = float(
            self._settings.sftp_auth_timeout_seconds)
        gate = self._gate = LoginGate(self._app, source=self.source)
        if not self._handshake(transport, gate):
            return
        outcome = self._await_sign_in(transport, gate)
        if outcome == "signed in":
            self.ticket.signed_in()
            self._supervise(transport, gate, activity)
        transport.close()
        # The SFTP threads abort what was left open when the channel closes; wait for
        # them, so that a stopping process does not exit before the aborts are recorded.
        activity.wait_sessions_ended(CLEANUP_SECONDS)
        gate.finish(timed_out=outcome == "timed out")
        if gate.end_reason is not None and gate.actor is not None:
            log.info("ended the session of %s from %s: %s", gate.actor.name, self.source,
                     gate.end_reason)
            self._app.auth.record_session_end(gate.actor, reason=gate.end_reason)

    @property
    def _deadline(self) -> float:
        """The end of the grace time, counted from accept: the banner and the handshake
        are part of it, so a client that dribbles them one byte at a time (which paramiko
        would read for ever) is cut off like one that never signs in."""
        return self._accepted + self._settings.sftp_auth_timeout_seconds

    def _handshake(self, transport: paramiko.Transport, gate: LoginGate) -> bool:
        """Negotiate keys as paramiko's ``start_server`` does, but give up on a stop or
        when the grace time is over."""
        done = threading.Event()
        try:
            transport.start_server(event=done, server=gate)
        except (SSHException, EOFError, OSError) as exc:
            log.info("handshake with %s failed: %s", self.source, exc)
            return False
        while not done.wait(POLL_SECONDS):
            if (not transport.is_active() or self._drain.requested
                    or time.monotonic() > self._deadline):
                break
        if done.is_set() and transport.is_active():
            return True
        reason = transport.get_exception() or (
            "the server is stopping" if self._drain.requested
            else "the grace time is over" if time.monotonic() > self._deadline
            else "negotiation failed")
        log.info("handshake with %s failed: %s", self.source, reason)
        return False

    def _await_sign_in(self, transport: paramiko.Transport, gate: LoginGate) -> str:
        """Wait for sign-in until the grace time is over; paramiko would wait for ever."""
        deadline = self._deadline
        while not gate.signed_in.wait(POLL_SECONDS):
            if gate.hangup.is_set() or not transport.is_active() or self._drain.requested:
                return "ended"
            if time.monotonic() > deadline:
                log.info("sign-in from %s timed out", self.source)
                return "timed out"
        return "signed in"

    def _supervise(self, transport: paramiko.Transport, gate: LoginGate,
                   activity: Activity) -> None:
        idle_limit = self._settings.sftp_idle_timeout_seconds
        while transport.is_active() and not gate.hangup.is_set():
            if self._drain.requested:
                if self._drained(gate, activity):
                    return
                time.sleep(POLL_SECONDS)
            elif self._drain.wait(1.0):
                continue
            elif activity.idle_seconds() > idle_limit:
                log.info("closing idle session of %s from %s", self._who(gate), self.source)
                return

    def _drained(self, gate: LoginGate, activity: Activity) -> bool:
        """Whether a stopping server may close this session now."""
        if not activity.transferring():
            return True
        if self._drain.expired():
            log.warning("closing the session of %s from %s with a transfer still open: "
                        "the drain time is over", self._who(gate), self.source)
            return True
        return False

    @staticmethod
    def _who(gate: LoginGate) -> str:
        return gate.actor.name if gate.actor else "?"


class Listener:
    """The accept loop of one process: admits connections and runs each in a thread."""

    def __init__(self, app: App, sock: socket.socket, *, host_key: paramiko.PKey,
                 limits: Admission) -> None:
        self._app = app
        self._sock = sock
        self._host_key = host_key
        self._limits = limits
        self._drain = Drain(app.settings.shutdown_drain_seconds)
        self._proxy = ProxyProtocol.from_settings(app.settings)
        self._memory = MemoryBudget(app.settings.sftp_process_buffer_mib * MIB,
                                    scope="server process")
        self._receive = ReceiveBudget(app.settings.sftp_receive_budget_mib * MIB,
                                      minimum=MIN_CHANNEL_WINDOW_KIB << 10,
                                      maximum=app.settings.sftp_channel_window_kib << 10)
        self._active: dict[Connection, threading.Thread] = {}
        self._lock = threading.Lock()
        quiet_paramiko()
        # Listening from here on, so the server accepts as soon as start() returns.
        sock.listen(128)
        sock.settimeout(ACCEPT_POLL_SECONDS)
        self._watcher = threading.Thread(target=self._watch_sessions, name="sftp-sessions",
                                         daemon=True)
        self._watcher.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        """Accept until :meth:`stop`; then drain the open sessions and return."""
        # The payload check's numpy loads beside the accepting, not in the first
        # pre-encrypted upload (which waited 0.14-0.5 s for it), in a worker process or
        # in the threads of a single-worker server alike.
        threading.Thread(target=randomness.preload, name="preload", daemon=True).start()
        while not self._drain.requested:
            try:
                client, address = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._drain.requested:
                    break
                log.exception("accept failed")
                continue
            self._admit(client, str(address[0]))
        self._finish_drain()

    def _admit(self, client: socket.socket, source: str, *, proxied: bool = False) -> None:
        if not proxied and self._proxy.trusts(source):
            # A load balancer's header is read off the accept loop, which must not wait.
            threading.Thread(target=self._admit_proxied, args=(client, source),
                             name=f"proxy-{source}", daemon=True).start()
            return
        ticket = self._limits.admit(source)
        if ticket is None:
            client.close()
            return
        client.settimeout(None)
        connection = Connection(self._app, client, source, host_key=self._host_key,
                                drain=self._drain, ticket=ticket, memory=self._memory,
                                receive=self._receive)
        thread = threading.Thread(target=self._run, args=(connection,),
                                  name=f"sftp-{source}", daemon=True)
        with self._lock:
            self._active[connection] = thread
        thread.start()

    def _admit_proxied(self, client: socket.socket, balancer: str) -> None:
        """Admit a load balancer's connection under the client address its header names."""
        client.settimeout(float(self._app.settings.sftp_auth_timeout_seconds))
        try:
            source = read_header(client, peer=balancer)
        except (ProxyHeaderError, OSError) as exc:
            log.log(logging.DEBUG if isinstance(exc, NoHeaderError) else logging.INFO,
                    "closing a connection from load balancer %s: %s", balancer, exc)
            client.close()
            return
        if self._drain.requested:
            client.close()
            return
        self._admit(client, source, proxied=True)

    def _run(self, connection: Connection) -> None:
        try:
            connection.run()
        finally:
            connection.ticket.release()
            with self._lock:
                self._active.pop(connection, None)

    def stop(self) -> None:
        """Stop accepting and drain (from any thread); :meth:`serve_forever` then returns."""
        self._drain.start()
        # Wakes the accept loop at once (Linux ends a blocked accept() on shutdown).
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _watch_sessions(self) -> None:
        while not self._drain.wait(SESSION_CHECK_SECONDS):
            try:
                self.end_revoked_sessions()
            except GatewayError as exc:
                # The database is away; sign-ins fail too, and the next round retries.
                log.warning("could not check the signed-in accounts: %s", exc.diagnostics())

    def end_revoked_sessions(self) -> int:
        """End the sessions whose account or partner was disabled; return how many."""
        with self._lock:
            signed_in = {connection: connection.account_id for connection in self._active}
        accounts = {account for account in signed_in.values() if account is not None}
        ended = self._app.auth.sessions_to_end(accounts)
        for connection, account in signed_in.items():
            if account in ended:
                connection.end(ended[account])
        return sum(1 for account in signed_in.values() if account in ended)

    def _finish_drain(self) -> None:
        """Wait for the sessions to end by themselves, then close any that hang."""
        self._sock.close()
        with self._lock:
            active = list(self._active.items())
        if active:
            log.info("stopping: waiting up to %s s for %d session(s) to finish their transfers",
                     self._app.settings.shutdown_drain_seconds, len(active))
        deadline = self._drain.deadline + CLEANUP_SECONDS
        for _, thread in active:
            thread.join(max(0.0, deadline - time.monotonic()))
        hung = [(connection, thread) for connection, thread in active if thread.is_alive()]
        for connection, _ in hung:
            log.warning("closing a session from %s that did not end in time", connection.source)
            connection.close()
        for _, thread in hung:
            thread.join(POLL_SECONDS)
