"""Run a hub from its config: the TLS listener, dial-out or relay loops, port hotplug, the revocation
list, the status socket and metrics, all stopped together."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from comtunnel.access import RevocationList
from comtunnel.aio.control import ControlServer, default_socket_path, start_control_server
from comtunnel.aio.hub import Hub
from comtunnel.aio.metrics import Snapshot
from comtunnel.aio.tasks import Tasks
from comtunnel.app.config import HubConfig
from comtunnel.certnames import CRL_FILE
from comtunnel.errors import CertificateError, UsageError
from comtunnel.ports.linetrace import LineTrace
from comtunnel.ports.open import PortSpec, open_device, traced_devices
from comtunnel.tls import hub_context, hub_relay_context

log = logging.getLogger("comtunnel")

#: How often the metrics are recomputed from the hub's status.
METRICS_REFRESH = 1.0


async def run_hub(config: HubConfig, stop: asyncio.Event) -> None:
    context = hub_context(config.certs)
    revocations = hub_revocations(config.certs, config.crl)
    if config.access is not None:
        log.info("access list: %s", ", ".join(config.access.rules) or "nobody")
    specs = list(config.ports)
    watcher = None
    if config.auto_ports:
        from comtunnel.ports.discovery import PortWatcher

        watcher = PortWatcher()
        found = [PortSpec(n, d) for n, d in watcher.ports.items() if all(s.name != n for s in specs)]
        log.info("--port auto: %s", ", ".join(f"{s.name}={s.device}" for s in found) or "no serial ports yet")
        specs.extend(found)
    for spec in specs:
        if spec.missing:
            log.warning(
                "port %s: %s does not exist (yet); clients are told so until it appears", spec.name, spec.device
            )
    trace = LineTrace(config.line_trace) if config.line_trace is not None else None
    if trace is not None:
        log.info("line trace: %s", trace.path)
    hub = Hub(
        specs,
        context,
        port_factory=traced_devices(trace) if trace is not None else open_device,
        serve=config.serve,
        grace=config.grace,
        access=config.access,
        revocations=revocations,
        admission=config.admission,
        max_buffered=config.max_buffered,
        **config.session.kwargs(),
    )
    tasks = Tasks("hub command")
    control: ControlServer | None = None
    try:
        await hub.start(*config.listen) if config.listen else await hub.start_gateways()
        hub.watch_revocations()
        if watcher is not None:
            hub.watch_ports(watcher)
        if config.control:
            control = await start_control(config.control_socket, hub.status_snapshot)
        if config.metrics is not None:
            tasks.spawn(serve_metrics(*config.metrics, hub.status_snapshot))
        for host, port in config.dial:
            tasks.spawn(hub.dial(host, port))
        if config.relay:
            from comtunnel.aio.relay_link import HubRelay

            relay_context = hub_relay_context(config.certs)
            for host, port in config.relay:
                tasks.spawn(HubRelay(hub, host, port, relay_context).run())
        await stop.wait()
    finally:
        await tasks.close()
        if control is not None:
            await control.close()
        await hub.close()
        if trace is not None:
            trace.close()


def hub_revocations(certs: Path, crl: Path | None) -> RevocationList:
    """The CRL the hub watches: ``crl``, which must exist and be valid, or crl.pem in ``certs``
    (which may appear later)."""
    ca_path = certs / "ca.crt"
    try:
        ca_pem = ca_path.read_bytes()  # parsed only once there is a CRL to check (hub_context checked it)
    except OSError as exc:
        raise CertificateError(f"cannot read {ca_path}: {exc}") from None
    revocations = RevocationList(crl or certs / CRL_FILE, ca_pem)
    if crl is not None:
        if not crl.exists():
            raise UsageError(f"--crl {crl}: no such file")
        revocations.reload_if_changed()
        if not revocations.loaded:
            raise CertificateError(f"--crl {crl} is not a revocation list signed by {ca_path} (see the log line above)")
    else:
        revocations.reload_if_changed()
    return revocations


async def start_control(path: Path | None, snapshot: Snapshot) -> ControlServer:
    """The socket `comtunnel status` asks."""
    path = path or default_socket_path()
    server = await start_control_server(path, snapshot)
    log.info("status: comtunnel status --socket %s", path)
    return server


async def serve_metrics(host: str, port: int, snapshot: Snapshot) -> None:
    """Prometheus metrics until cancelled, refreshed from the status snapshot."""
    from comtunnel.aio.metrics import start_metrics_server

    metrics = start_metrics_server(host, port, snapshot)
    log.info("metrics on http://%s:%s/metrics", host, port)
    try:
        while True:
            await asyncio.sleep(METRICS_REFRESH)
            metrics.refresh()
    finally:
        metrics.stop()
