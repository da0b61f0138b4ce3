"""The client's asyncio shell: ``session`` (dialling or listening for the hub, resumption, what
the hub reports), ``channel`` (one local port and its place in the tunnel) and ``ports`` (the
local ports the client creates)."""

from comtunnel.aio.client.channel import ClientChannel, LinkState
from comtunnel.aio.client.session import Client, fetch_ports
from comtunnel.specs import AttachSpec, LinkSpec, ServeSpec

__all__ = ["AttachSpec", "Client", "ClientChannel", "LinkSpec", "LinkState", "ServeSpec", "fetch_ports"]
