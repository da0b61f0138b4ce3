"""The hub's asyncio shell: ``server`` (listening, dialling out, revocation and hotplug polling,
status), ``session`` (one client's connection and channels), ``channel`` (a device driven in wire
order), ``gateway`` (a port served straight to a local TCP client), ``ports`` (the port table
and its registry, shared by sessions and gateways). Decisions live in :mod:`comtunnel.policy`.
"""

from comtunnel.aio.hub.channel import HubChannel, MonitorChannel
from comtunnel.aio.hub.gateway import LocalGateway
from comtunnel.aio.hub.server import Hub
from comtunnel.aio.hub.session import HubSession
from comtunnel.policy.registry import Holder
from comtunnel.ports.open import PortSpec, open_device

__all__ = ["Holder", "Hub", "HubChannel", "HubSession", "LocalGateway", "MonitorChannel", "PortSpec", "open_device"]
