"""Run a relay from its config: the listener, and the status socket, stopped together."""

from __future__ import annotations

import asyncio
import logging

from comtunnel.aio.control import ControlServer, relay_socket_path
from comtunnel.aio.relay import Relay
from comtunnel.app.config import RelayConfig
from comtunnel.app.hub import start_control
from comtunnel.tls import relay_contexts

log = logging.getLogger("comtunnel")


async def run_relay(config: RelayConfig, stop: asyncio.Event) -> None:
    for_clients, for_hubs = relay_contexts(config.certs, config.relay_ca)
    relay = Relay(for_clients, for_hubs, config.limits)
    control: ControlServer | None = None
    try:
        await relay.start(*config.listen)
        if config.control:
            control = await start_control(config.control_socket or relay_socket_path(), relay.status_snapshot)
        await stop.wait()
    finally:
        if control is not None:
            await control.close()
        await relay.close()
