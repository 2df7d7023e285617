"""The SFTP node's ``/metrics`` endpoint: audit-derived counters plus this node's own.

This node's own figures: open SFTP connections (from the shared connection table, so
every worker counts) and store errors (from :mod:`sftp_server.counters`). The endpoint
runs in the process that supervises the workers, and only when ``metrics_listen`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.app import App
from gateway.metrics import AuditCollector, MetricsEndpoint, serve_metrics
from sftp_server.admission import LimitTable
from sftp_server.counters import NodeCounters


class Measured(Protocol):
    """A started server whose connection table and counters can be read."""

    @property
    def table(self) -> LimitTable: ...

    @property
    def counters(self) -> NodeCounters: ...


class NodeCollector(Collector):
    """Open connections and store errors of this node."""

    def __init__(self, server: Measured) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        # Read without a lock, as the workers do: each count is one aligned int.
        yield GaugeMetricFamily("blindpost_sftp_connections",
                                "Open SFTP connections on this node (signing in or signed in).",
                                value=self._server.table.connections())
        yield CounterMetricFamily("blindpost_store_errors",
                                  "Requests on this node that failed in the object store.",
                                  value=self._server.counters.store_errors())


def start_metrics(app: App, server: Measured) -> MetricsEndpoint | None:
    """Serve ``/metrics`` for ``server`` if ``metrics_listen`` is set."""
    listen = app.settings.metrics_listen
    if not listen:
        return None
    return serve_metrics(listen, [AuditCollector(app), NodeCollector(server)])
