"""Run a client from its config: one :class:`Client` per hub, sharing the link names in the link
directory, until stopped or until one of them fails for good."""

from __future__ import annotations

import asyncio
import logging
import os

from comtunnel.aio.client import Client
from comtunnel.aio.control import ControlServer, client_socket_path, start_control_server
from comtunnel.app.config import ClientConfig
from comtunnel.errors import UsageError
from comtunnel.tls import client_context

log = logging.getLogger(__name__)


async def run_client(config: ClientConfig, stop: asyncio.Event) -> None:
    context = client_context(config.certs, config.name)
    dialer = None
    if config.relay is not None:
        from comtunnel.aio.relay_link import relay_dialer

        assert config.hub_name is not None  # client_config requires it with --relay
        dialer = relay_dialer(*config.relay, config.certs, config.name, config.hub_name, config.relay_ca)
    taken: set[str] = set()  # link names in the link directory, shared so two hubs' ports cannot collide
    clients = [
        Client(
            hub.host,
            hub.port,
            context,
            links=hub.links,
            attach=hub.attach,
            serve=hub.serve,
            link_dir=config.link_dir,
            link_access=config.link_access,
            server_hostname=config.hub_name,
            listen=config.listen,
            label=hub.label,
            taken_links=taken,
            connect_timeout=config.connect_timeout,
            dialer=dialer,
            **config.session.kwargs(),
        )
        for hub in config.hubs
    ]
    runs = [asyncio.ensure_future(client.run()) for client in clients]
    stopper = asyncio.ensure_future(stop.wait())
    control = await _start_control(clients)
    try:
        await asyncio.wait([*runs, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for client in clients:
            client.stop()
        stopper.cancel()
        results = await asyncio.gather(*runs, return_exceptions=True)
        if control is not None:
            await control.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _start_control(clients: list[Client]) -> ControlServer | None:
    """The socket `comtunnel list --local` reads; the client works without it."""

    def snapshot() -> dict[str, object]:
        return {"pid": os.getpid(), "hubs": [client.status() for client in clients]}

    try:
        return await start_control_server(client_socket_path(), snapshot)
    except (UsageError, OSError) as exc:
        log.warning("no status socket for 'comtunnel list --local': %s", exc)
        return None
