"""Every port the tunnel drives sees the client's bytes and line operations in wire order.

A fake port records what reaches it; its line operations hop through a worker thread as
DevicePort's do, and its write buffer drains a moment later, as a tty's does. Hypothesis feeds
random interleavings of DATA / SET_SETTINGS / SET_CONTROL / PURGE, cut at arbitrary points, into
a real HubSession (in memory), a real hub gateway (RFC 2217 over TCP) and a real
Rfc2217RemotePort (against an RFC 2217 server that records what it receives).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import wait_for

from comtunnel.aio.hub import Hub, HubSession, PortSpec
from comtunnel.ports.base import PortListener, SerialPort
from comtunnel.ports.open import make_server_port
from comtunnel.protocol import events as ev
from comtunnel.protocol import rfc2217 as r
from comtunnel.protocol.errors import RemoteProtocolError
from comtunnel.protocol.limits import DEFAULT_WINDOW
from comtunnel.protocol.mux import Connection, Role
from comtunnel.protocol.settings import ControlRequest, ControlState, ModemLines, PortSettings, Purge
from comtunnel.specs import ServeSpec

Op = tuple[str, Any]  # ("data", bytes) | ("settings", baud) | ("control", dtr) | ("purge", Purge)

BAUDS = [1200, 9600, 19200, 57600, 115200, 230400, 921600]


class ThreadHopPort(SerialPort):
    """Records writes at once and line operations when they take effect, after a worker-thread hop."""

    def __init__(self, *, slow: float = 0.0) -> None:
        self.description = "thread-hop fake"
        self.log: list[Op] = []
        self.buffered = 0
        self.buffered_at_change: list[int] = []  # the write buffer each line change found
        self.slow = slow
        self.listener: PortListener | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rng = random.Random(7)

    async def open(self, listener: PortListener) -> None:
        self.listener, self.loop = listener, asyncio.get_running_loop()

    def _record(self, kind: str, value: Any) -> None:
        if kind == "data" and self.log and self.log[-1][0] == "data":
            self.log[-1] = ("data", self.log[-1][1] + value)
        else:
            self.log.append((kind, value))

    def write(self, data: bytes) -> None:
        self._record("data", bytes(data))
        self.buffered += len(data)
        assert self.loop is not None
        self.loop.call_later(self.rng.random() * 0.002, self._sent, len(data))

    def _sent(self, size: int) -> None:
        self.buffered -= size
        if self.buffered == 0 and self.listener is not None:
            self.listener.port_drained()

    @property
    def write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    async def _hop(self) -> None:
        await asyncio.to_thread(time.sleep, self.slow or self.rng.random() * 0.002)

    async def apply_settings(self, settings: PortSettings) -> PortSettings:
        self.buffered_at_change.append(self.buffered)
        await self._hop()
        self._record("settings", settings.baudrate)
        return settings

    async def set_control(self, request: ControlRequest) -> ControlState:
        self.buffered_at_change.append(self.buffered)
        await self._hop()
        self._record("control", request.dtr)
        return request.apply_to(ControlState())

    async def purge(self, which: Purge) -> None:
        await self._hop()
        self._record("purge", which)

    def modem_lines(self) -> ModemLines:
        return ModemLines.NONE

    async def close(self) -> None:
        self.listener = None


def merged(ops: Sequence[Op]) -> list[Op]:
    out: list[Op] = []
    for kind, value in ops:
        if kind == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + value)
        elif kind != "data" or value:
            out.append((kind, value))
    return out


op_st = st.one_of(
    st.tuples(st.just("data"), st.binary(min_size=1, max_size=3000)),
    st.tuples(st.just("settings"), st.sampled_from(BAUDS)),
    st.tuples(st.just("control"), st.booleans()),
    st.tuples(st.just("purge"), st.sampled_from(list(Purge))),
)
ops_st = st.lists(op_st, min_size=1, max_size=30)
cuts_st = st.lists(st.integers(1, 5000), max_size=20)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % len(data) for c in cuts if c % len(data)}) if data else []
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.out += data

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class InMemoryHub:
    """A real Hub and HubSession over a memory transport, driven by a real client Connection."""

    def __init__(self, ports: dict[str, ThreadHopPort]) -> None:
        self.ports = ports
        self.hub = Hub(
            [PortSpec(name, "fake") for name in ports],
            cast(ssl.SSLContext, None),
            port_factory=lambda spec, settings, control: self.ports[spec.name],
            grace=0,
        )
        self.session = HubSession(self.hub)
        self.transport = MemoryTransport()
        self.session.tunnel.connection_made(self.transport)
        self.client = Connection(Role.CLIENT)
        self.events: list[ev.Event] = []

    def to_hub(self, data: bytes) -> None:
        self.session.tunnel.data_received(data)

    def to_client(self) -> None:
        self.events += self.client.receive_data(self.transport.take())

    async def open(self, name: str) -> int:
        cid = self.client.open_channel(name, PortSettings(9600))
        self.to_hub(self.client.data_to_send())

        def opened() -> bool:
            self.to_client()
            return any(isinstance(e, ev.ChannelOpened) and e.channel == cid for e in self.events)

        await wait_for(opened)
        # the whole window at once (a port that keeps up earns it; the test sends without waiting)
        self.session.conn.resize_window(cid, DEFAULT_WINDOW)
        self.session.tunnel.flush()
        self.to_client()
        if name in self.ports:  # the open applied the initial settings: what follows is the client's
            self.ports[name].log.clear()
            self.ports[name].buffered_at_change.clear()
        return cid

    def queue(self, cid: int, ops: Sequence[Op]) -> None:
        c = self.client
        for kind, value in ops:
            match kind:
                case "data":
                    c.send_data(cid, value)
                case "settings":
                    c.request_settings(cid, PortSettings(value))
                case "control":
                    c.request_control(cid, ControlRequest(dtr=value))
                case "purge":
                    c.request_purge(cid, value)

    async def close(self) -> None:
        self.session.tunnel.connection_lost(None)
        await self.hub.close()


def expect_wire_order(port: ThreadHopPort, ops: Sequence[Op]) -> None:
    assert port.log == merged(ops)
    assert not any(port.buffered_at_change), "a line change ran before earlier output had drained"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_st, cuts=cuts_st)
def test_hub_channel_applies_the_wire_order(ops: list[Op], cuts: list[int]) -> None:
    async def main() -> None:
        port = ThreadHopPort()
        hub = InMemoryHub({"dev": port})
        try:
            cid = await hub.open("dev")
            hub.queue(cid, ops)
            for chunk in split(hub.client.data_to_send(), cuts):
                hub.to_hub(chunk)
                if random.random() < 0.5:
                    await asyncio.sleep(0)
            expected = merged(ops)
            await wait_for(lambda: len(port.log) == len(expected) and port.log[-1] == expected[-1], timeout=3)
            expect_wire_order(port, ops)
            # credit came back for every byte (the quiet-line timer returns the last of it)
            window = hub.session.conn.window_size(cid)
            await wait_for(lambda: (hub.to_client(), hub.client.send_window(cid) == window)[1], timeout=5)
        finally:
            await hub.close()

    asyncio.run(main())


def test_a_slow_operation_delays_only_its_own_channel() -> None:
    async def main() -> None:
        slow, fast = ThreadHopPort(slow=0.5), ThreadHopPort()
        hub = InMemoryHub({"slow": slow, "fast": fast})
        try:
            a, b = await hub.open("slow"), await hub.open("fast")
            hub.queue(a, [("settings", 1200), ("data", b"after the slow change")])
            hub.queue(b, [("data", b"x" * 1000), ("settings", 19200), ("data", b"y")])
            hub.to_hub(hub.client.data_to_send())
            took = await wait_for(lambda: len(fast.log) == 3, timeout=5)
            assert took < 0.25, f"the fast channel waited {took:.3f} s behind the slow one"
            assert slow.log == [], "data overtook the slow channel's settings change"
            await wait_for(lambda: len(slow.log) == 2, timeout=5)
            assert slow.log == [("settings", 1200), ("data", b"after the slow change")]
        finally:
            await hub.close()

    asyncio.run(main())


# --- the hub's RFC 2217 gateway: a TCP client's telnet stream ----------------------------------------


def rfc2217_bytes(ops: Sequence[Op]) -> tuple[bytes, list[Op]]:
    """A telnet client's stream for ``ops`` and what the device should see (the server passes on a
    settings change only when the value changes). No CR in the data: sent before BINARY is agreed,
    a telnet client turns CR into CR NUL (RFC 854), which real clients avoid by waiting."""
    codec = r.Rfc2217Client()
    codec.start()
    expected: list[Op] = []
    baud = 9600
    for kind, value in ops:
        match kind:
            case "data":
                value = value.replace(b"\r", b"\n")
                codec.send_data(value)
                expected.append((kind, value))
            case "settings":
                codec.set_baudrate(value)
                if value != baud:
                    expected.append((kind, value))
                baud = value
            case "control":
                codec.set_control(r.DTR_ON if value else r.DTR_OFF)
                expected.append((kind, value))
            case "purge":
                codec.purge(value)
                expected.append((kind, value))
    return codec.data_to_send(), expected


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_st, cuts=cuts_st)
def test_hub_gateway_applies_the_tcp_clients_order(ops: list[Op], cuts: list[int]) -> None:
    async def main() -> None:
        port = ThreadHopPort()
        hub = Hub([PortSpec("dev", "fake")], cast(ssl.SSLContext, None), port_factory=lambda *_: port)
        from comtunnel.aio.hub.gateway import LocalGateway

        server = make_server_port(ServeSpec("dev", "127.0.0.1", 0, "rfc2217"))
        gateway = LocalGateway(hub.hub_ports, hub.ports["dev"], server)
        await gateway.start()
        stream, expected = rfc2217_bytes(ops)
        assert gateway.app.address is not None
        reader, writer = await asyncio.open_connection(*gateway.app.address)
        try:
            for chunk in split(stream, cuts):  # from the first byte on, while the device is still opening
                writer.write(chunk)
                await writer.drain()
            # the open itself applies the initial settings; what follows is the client's
            await wait_for(lambda: merged(port.log[1:]) == merged(expected), timeout=5)
            assert not any(port.buffered_at_change)
        finally:
            writer.close()
            await gateway.close()

    asyncio.run(main())


# --- a remote RFC 2217 port (ser2net's role played by our own server codec) --------------------------


class RecordingRfc2217Server(asyncio.Protocol):
    """Acknowledges every request and records data and requests in the order they arrive."""

    def __init__(self, log: list[Op]) -> None:
        self.codec = r.Rfc2217Server()
        self.log = log
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.codec.start()
        self.transport.write(self.codec.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.codec.receive_data(data):
            match event:
                case r.SerialDataReceived(payload):
                    if self.log and self.log[-1][0] == "data":
                        self.log[-1] = ("data", self.log[-1][1] + payload)
                    else:
                        self.log.append(("data", payload))
                case r.BaudRateRequested(baud):
                    self.log.append(("settings", baud))
                    self.codec.ack_baudrate(baud)
                case r.DataSizeRequested(bits):
                    self.codec.ack_datasize(bits or 8)
                case r.ParityRequested(parity):
                    self.codec.ack_parity(parity or PortSettings().parity)
                case r.StopSizeRequested(stop):
                    self.codec.ack_stopsize(stop or PortSettings().stopbits)
                case r.ComControlRequested(code):
                    if code in (r.DTR_ON, r.DTR_OFF):
                        self.log.append(("control", code == r.DTR_ON))
                    self.codec.ack_control(code)
                case r.ComPurgeRequested(which):
                    self.log.append(("purge", which))
                    self.codec.ack_purge(which)
        assert self.transport is not None
        self.transport.write(self.codec.data_to_send())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_st, cuts=cuts_st)
def test_remote_rfc2217_port_gets_the_wire_order(ops: list[Op], cuts: list[int]) -> None:
    from comtunnel.aio.hub import open_device

    async def main() -> None:
        log: list[Op] = []
        server = await asyncio.get_running_loop().create_server(lambda: RecordingRfc2217Server(log), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        url = f"rfc2217://127.0.0.1:{address[1]}"
        port_holder: list[SerialPort] = []

        def factory(spec: PortSpec, s: PortSettings, c: ControlRequest) -> SerialPort:
            port_holder.append(open_device(spec, s, c))
            return port_holder[-1]

        hub = InMemoryHub({})
        hub.hub.ports = {"dev": PortSpec("dev", url)}
        hub.hub.port_factory = factory
        try:
            cid = await hub.open("dev")
            opening = len(log)  # the open's own settings and DTR/RTS
            hub.queue(cid, ops)
            for chunk in split(hub.client.data_to_send(), cuts):
                hub.to_hub(chunk)
                await asyncio.sleep(0)
            expected = merged(ops)
            await wait_for(lambda: merged(log[opening:]) == expected, timeout=5)
        finally:
            await hub.close()
            server.close()

    asyncio.run(main())


@pytest.mark.parametrize("cut_in", ["operation", "data after it"])
@pytest.mark.parametrize("which", [Purge.RECEIVE, Purge.TRANSMIT])
def test_replayed_operations_apply_once_in_place(which: Purge, cut_in: str) -> None:
    """A cut loses the tail of the stream: the resumed session resends it, the operation once, in place."""
    from comtunnel.protocol import frames as fr
    from comtunnel.protocol.codec import encode_frame

    client, hub = Connection(Role.CLIENT), Connection(Role.HUB, session_token="t")
    hub.receive_data(client.data_to_send())
    client.receive_data(hub.data_to_send())
    cid = client.open_channel("p", PortSettings())
    [request] = hub.receive_data(client.data_to_send())
    assert isinstance(request, ev.ChannelOpenRequested)
    hub.accept_channel(cid, PortSettings())
    client.receive_data(hub.data_to_send())
    client.send_data(cid, b"before")
    first = client.data_to_send()
    client.request_purge(cid, which)
    operation = client.data_to_send()
    client.send_data(cid, b"after")
    last = client.data_to_send()
    cut = len(first) + len(operation) - 1 if cut_in == "operation" else len(first + operation + last) - 1
    got = hub.receive_data((first + operation + last)[:cut])
    had_operation = cut_in != "operation"
    assert got == [ev.DataReceived(cid, b"before"), *([ev.PurgeRequested(cid, which)] if had_operation else [])]
    # the client resumes on a new connection, which takes the hub's session over
    client2 = Connection(Role.CLIENT, resume_from=client)
    hub2 = Connection(Role.HUB, session_token="t2")
    _hello, resume = hub2.receive_data(client2.data_to_send())
    assert isinstance(resume, ev.ResumeRequested)
    hub2.accept_resume(hub, resume.channels)
    client2.receive_data(hub2.data_to_send())
    events = hub2.receive_data(client2.data_to_send())
    replayed = [] if had_operation else [ev.PurgeRequested(cid, which)]
    assert events == [*replayed, ev.DataReceived(cid, b"after")]
    # the same operation once more (a hostile or buggy replay) is skipped by its number
    assert hub2.receive_data(encode_frame(fr.PurgeRequest(cid, which, seq=0, offset=6))) == []
    # an operation out of its place is a protocol error, not applied somewhere else
    with pytest.raises(RemoteProtocolError):
        hub2.receive_data(encode_frame(fr.PurgeRequest(cid, which, seq=1, offset=3)))
