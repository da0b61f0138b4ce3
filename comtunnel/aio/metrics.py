"""An optional Prometheus endpoint for the hub, read from the same snapshot as `comtunnel status`.

A custom collector evaluates the hub's snapshot at scrape time: no counters to keep in step with the
data path, and nothing costs anything between scrapes. prometheus_client is optional
(``pip install 'comtunnel[metrics]'``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from comtunnel.errors import UsageError

Snapshot = Callable[[], dict[str, Any]]


class MetricsServer:
    """The HTTP server runs in a thread; the hub's state lives on the event loop, so the loop copies
    a snapshot in with :meth:`refresh` (once a second) and scrapes read that copy."""

    def __init__(self, refresh: Callable[[], None], stop: Callable[[], None]) -> None:
        self.refresh = refresh
        self.stop = stop


def start_metrics_server(host: str, port: int, snapshot: Snapshot) -> MetricsServer:
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        raise UsageError("--metrics needs prometheus_client: pip install 'comtunnel[metrics]'") from None

    latest: dict[str, Any] = {}
    lock = threading.Lock()

    class HubCollector:
        def collect(self) -> Iterator[Any]:
            with lock:
                snap = dict(latest)
            if not snap:
                return
            sessions = GaugeMetricFamily("comtunnel_sessions", "Client sessions", labels=["state"])
            connected = sum(1 for s in snap["sessions"] if s.get("connected", True))
            sessions.add_metric(["connected"], connected)
            sessions.add_metric(["disconnected"], len(snap["sessions"]) - connected)
            yield sessions
            in_use = GaugeMetricFamily("comtunnel_port_in_use", "1 if a client holds the port", labels=["port"])
            monitors = GaugeMetricFamily("comtunnel_port_monitors", "Monitors watching the port", labels=["port"])
            for port in snap["ports"]:
                in_use.add_metric([port["name"]], 0 if port["state"] == "free" else 1)
                monitors.add_metric([port["name"]], port.get("monitors", 0))
            yield in_use
            yield monitors
            moved = CounterMetricFamily(
                "comtunnel_port_bytes", "Bytes moved per port and direction", labels=["port", "client", "direction"]
            )
            channels = GaugeMetricFamily("comtunnel_channels", "Open channels", labels=["client", "access"])
            counts: dict[tuple[str, str], int] = {}
            for session in snap["sessions"]:
                for ch in session["channels"]:
                    labels = [ch["port"], session["client"]]
                    moved.add_metric([*labels, "to_device"], ch["bytes_to_device"])
                    moved.add_metric([*labels, "from_device"], ch["bytes_from_device"])
                    key = (session["client"], ch["access"])
                    counts[key] = counts.get(key, 0) + 1
            for (client, access), n in counts.items():
                channels.add_metric([client, access], n)
            yield moved
            yield channels
            uptime = GaugeMetricFamily("comtunnel_uptime_seconds", "Seconds since the hub started")
            uptime.add_metric([], snap["now"] - snap["started"])
            yield uptime

    registry = CollectorRegistry()
    registry.register(HubCollector())
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"--metrics {host}:{port}: cannot listen: {exc.strerror}") from None

    def refresh() -> None:
        with lock:
            latest.clear()
            latest.update(snapshot())

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    refresh()
    return MetricsServer(refresh, stop)
