"""Tunnel.data_received hands every event of one read to the handler the tunnel has at that moment."""

from __future__ import annotations

import asyncio

from muxpair import open_channel, pair

from comtunnel.aio.tunnel import Tunnel
from comtunnel.protocol import events as ev
from comtunnel.protocol.settings import PortSettings


class Recorder:
    def __init__(self, tunnel: Tunnel, successor: Recorder | None = None) -> None:
        self.tunnel = tunnel
        self.successor = successor
        self.events: list[ev.Event] = []

    def tunnel_event(self, event: ev.Event) -> None:
        self.events.append(event)
        if isinstance(event, ev.SettingsRequested) and self.successor is not None:
            self.tunnel.handler = self.successor  # as a resumed hub session takes a new connection over

    def tunnel_lost(self, exc: BaseException | None) -> None:
        pass


def test_data_after_a_handover_in_the_same_read_goes_to_the_new_handler() -> None:
    async def main() -> None:
        client, hub = pair()
        cid = open_channel(client, hub)
        tunnel = Tunnel(hub)
        second = Recorder(tunnel)
        first = Recorder(tunnel, successor=second)
        tunnel.handler = first
        client.send_data(cid, b"before")
        client.request_settings(cid, PortSettings(baudrate=9600))
        client.send_data(cid, b"after")
        tunnel.data_received(client.data_to_send())  # one read: DATA, SET_SETTINGS, DATA

        assert [type(e) for e in first.events] == [ev.DataReceived, ev.SettingsRequested]
        assert first.events[0].data == b"before"  # type: ignore[attr-defined]
        assert [(type(e), getattr(e, "data", None)) for e in second.events] == [(ev.DataReceived, b"after")]

    asyncio.run(main())
