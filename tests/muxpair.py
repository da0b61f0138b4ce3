"""Two sans-I/O connections wired back to back, for the multiplexer's and flow control's tests."""

from __future__ import annotations

from comtunnel.protocol import events as ev
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import PortSettings


def pump(a: Connection, b: Connection) -> tuple[list[ev.Event], list[ev.Event]]:
    """Exchange bytes until both sides are quiet; return the events each side saw."""
    seen_a: list[ev.Event] = []
    seen_b: list[ev.Event] = []
    for _ in range(1000):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return seen_a, seen_b
        seen_b += b.receive_data(out_a)
        seen_a += a.receive_data(out_b)
    raise AssertionError("the connections never went quiet")


def pair(window: int = 4096, hub_window: int | None = None, max_channels: int = 8) -> tuple[Connection, Connection]:
    """A client and a hub past their HELLOs (the hub's window is the client's unless given)."""
    client = Connection(Role.CLIENT, {"software": "test-client"}, window=window)
    hub_window = window if hub_window is None else hub_window
    hub = Connection(Role.HUB, {"software": "test-hub"}, window=hub_window, max_channels=max_channels)
    pump(client, hub)
    return client, hub


def open_channel(client: Connection, hub: Connection, port: str = "p", settings: PortSettings | None = None) -> int:
    """A channel opened by the client and accepted by the hub."""
    settings = settings or PortSettings()
    cid = client.open_channel(port, settings)
    pump(client, hub)
    assert hub.accept_channel(cid, settings)
    pump(client, hub)
    return cid
