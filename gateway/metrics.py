"""Prometheus metrics: security counters derived from the audit log, and the endpoint.

The counters (uploads, downloads, bytes, sign-ins, failures, lockouts, purges) are
computed from the audit log, not counted in memory: every worker process and every node
reads the same log, so they all report the same totals, with no counter shared between
processes. Each scrape reads only the entries appended since the previous one.
Process-local figures (open connections, store errors) come from the adapter's own
collector. The endpoint is off unless ``metrics_listen`` is set; it shows counts and
times only, never names, addresses or file contents.
"""

from __future__ import annotations

import errno
import json
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from gateway.audit.log import checkpoints, entries
from gateway.audit.tags import AuditTag
from gateway.config import address_in_use, parse_listen
from gateway.db.engine import snapshot
from gateway.errors import ConfigError, StartupError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from gateway.app import App

# Counter name, help, and the tag it counts.
COUNTED = (
    ("blindpost_uploads", "Files uploaded (committed).", AuditTag.UPLOAD_COMPLETE),
    ("blindpost_downloads", "Complete downloads.", AuditTag.DOWNLOAD_COMPLETE),
    ("blindpost_signins", "Successful sign-ins.", AuditTag.LOGIN_SUCCESS),
    ("blindpost_signin_failures", "Failed or abandoned sign-ins.", AuditTag.LOGIN_FAILURE),
    ("blindpost_lockouts", "Accounts or source addresses locked out.", AuditTag.LOCKOUT),
    ("blindpost_purges", "Files purged (expired or download limit reached).",
     AuditTag.FILE_PURGE),
    ("blindpost_witness_quorum_missed", "Audit checkpoints cosigned by fewer witnesses than "
     "the quorum.", AuditTag.AUDIT_WITNESS_QUORUM_MISSED),
    ("blindpost_witness_refusals", "Checkpoints a witness refused as contradicting the "
     "history it cosigned (a rewritten or truncated log).", AuditTag.AUDIT_WITNESS_REFUSED),
    ("blindpost_notifications_sent", "Notifications handed to the relay or webhook.",
     AuditTag.NOTIFY_SENT),
    ("blindpost_notification_failures", "Failed attempts to send a notification (the "
     "relay or webhook down or refusing).", AuditTag.NOTIFY_FAILURE),
)
# Which detail of which event carries a byte count.
BYTES = {AuditTag.UPLOAD_COMPLETE: ("blindpost_upload_bytes", "size"),
         AuditTag.DOWNLOAD_COMPLETE: ("blindpost_download_bytes", "bytes")}
_TAGS = [tag.value for _, _, tag in COUNTED]


class AuditCollector(Collector):
    """Counters and gauges read from the audit log; see the module docstring."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._size = 0
        self._counts: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()
        self._checkpoint_age: float | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._catch_up()
            yield from self._families()

    def _catch_up(self) -> None:
        """Read the entries appended since the last scrape, within one snapshot.

        Entries commit in index order (the audit sequencer holds its lock until commit),
        so nothing below the largest index seen can appear later.
        """
        with snapshot(self._app.engine) as session:
            last = session.execute(select(func.max(entries.c.idx))).scalar()
            size = 0 if last is None else int(last) + 1
            rows = session.execute(
                select(entries.c.tag, entries.c.leaf)
                .where(entries.c.idx >= self._size, entries.c.idx < size,
                       entries.c.tag.in_(_TAGS))
                .execution_options(yield_per=1000))
            for tag, leaf in rows:
                self._count(AuditTag(tag), leaf)
            latest = session.execute(select(checkpoints.c.created_at)
                                     .order_by(checkpoints.c.id.desc()).limit(1)).scalar()
        self._size = size
        self._checkpoint_age = (None if latest is None else
                                (self._app.clock() - latest).total_seconds())

    def _count(self, tag: AuditTag, leaf: str) -> None:
        self._counts[tag.value] += 1
        if tag in BYTES:
            name, detail = BYTES[tag]
            value = json.loads(leaf).get("details", {}).get(detail)
            if isinstance(value, int):
                self._bytes[name] += value

    def _families(self) -> Iterable[Metric]:
        for name, help_text, tag in COUNTED:
            yield CounterMetricFamily(name, help_text, value=self._counts[tag.value])
        for name, _ in BYTES.values():
            yield CounterMetricFamily(name, "Ciphertext bytes, from the audit log.",
                                      value=self._bytes[name])
        yield GaugeMetricFamily("blindpost_audit_entries", "Entries in the audit log.",
                                value=self._size)
        if self._checkpoint_age is not None:
            yield GaugeMetricFamily("blindpost_audit_checkpoint_age_seconds",
                                    "Seconds since the latest signed checkpoint.",
                                    value=self._checkpoint_age)


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP endpoint."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve_metrics(listen: str, collectors: Iterable[Collector]) -> MetricsEndpoint:
    """Serve the collectors on ``listen`` (``HOST:PORT``) in a background thread."""
    host, port = parse_listen(listen, key="metrics_listen")
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(address_in_use("metrics_listen", listen, flag=None)) from exc
        raise ConfigError(f"metrics_listen: cannot listen on {listen}: "
                          f"{exc.strerror or exc}") from exc
    return MetricsEndpoint(server, thread)
