"""The relay in-process, with real TLS on 127.0.0.1 and the real dialling code on both ends: a
pairing's memory on the relay stays bounded when one end stops reading (the relay stops reading
the other), every byte arrives once it reads again; a reconnecting hub's registration replaces
the old one; a wrong preamble and a client asking for a missing hub are refused with reasons."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import pytest
from support import wait_for

from comtunnel.aio.relay import Relay
from comtunnel.aio.relay_link import RelayRefused, RendezvousLink, client_dialer, dial_relay
from comtunnel.certs import init_certs, issue_relay
from comtunnel.policy.relay import RelayLimits
from comtunnel.protocol import rendezvous as rv
from comtunnel.tls import client_context, hub_relay_context, relay_contexts

HUB_NAME = "hub.test"


@pytest.fixture(scope="module")
def relay_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("relay-flow-certs")
    init_certs(directory, [HUB_NAME], ["alice"])
    issue_relay(directory, ["127.0.0.1"])
    return directory


class Sink(asyncio.Protocol):
    """Where a paired stream ends up: counts and hashes what arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.digest = hashlib.sha256()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.digest.update(data)


class FakeHub:
    """A hub's side of the rendezvous with the real RendezvousLink, each attach ending in a Sink."""

    def __init__(self, port: int, certs: Path) -> None:
        self.port, self.context = port, hub_relay_context(certs)
        self.sinks: list[Sink] = []
        self.names: tuple[str, ...] = ()
        self.tasks: set[asyncio.Task[None]] = set()

    async def register(self) -> RendezvousLink:
        link = RendezvousLink(rv.Role.HUB, rv.Register(), None, "relay", self._message)
        await dial_relay("127.0.0.1", self.port, self.context, link, server_side=True)
        await wait_for(lambda: bool(self.names))
        return link

    def _message(self, message: rv.Message) -> None:
        match message:
            case rv.Registered(names):
                self.names = names
            case rv.Offer(token):
                task = asyncio.ensure_future(self._attach(token))
                self.tasks.add(task)

    async def _attach(self, token: bytes) -> None:
        sink = Sink()
        link = RendezvousLink(rv.Role.HUB, rv.Attach(token), sink, "relay")
        await dial_relay("127.0.0.1", self.port, self.context, link, server_side=True)
        await link.paired
        self.sinks.append(sink)


def test_a_pairing_holds_bounded_memory_on_the_relay_and_loses_nothing(relay_certs: Path) -> None:
    async def main() -> None:
        server = Relay(*relay_contexts(relay_certs), RelayLimits(write_high=256 * 1024, write_low=64 * 1024))
        (_, port), *_ = await server.start("127.0.0.1", 0)
        hub = FakeHub(port, relay_certs)
        control = await hub.register()
        sender = Sink()
        await client_dialer("127.0.0.1", port, client_context(relay_certs, "alice"), HUB_NAME)(sender)
        await wait_for(lambda: bool(hub.sinks))
        (receiver,) = hub.sinks
        assert sender.transport is not None and receiver.transport is not None
        receiver.transport.pause_reading()  # the hub's end stops reading

        rng, sent, digest, most = random.Random(7), 0, hashlib.sha256(), 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while sender.transport.get_write_buffer_size() < 4 << 20 and loop.time() < deadline:
            chunk = rng.randbytes(64 * 1024)
            sender.transport.write(chunk)
            digest.update(chunk)
            sent += len(chunk)
            await asyncio.sleep(0.001)
            most = max(most, sum(end.tls.get_write_buffer_size() for end in server.ends.values() if end.tls))
        # the client's own buffer filled: the relay stopped reading it, and held at most its limit
        # plus one read's worth (asyncio reads up to 256 KiB at a time) for the stalled side
        assert sender.transport.get_write_buffer_size() >= 4 << 20, f"never stalled after {sent} bytes"
        assert most <= 256 * 1024 + 2 * 256 * 1024, f"the relay held {most} bytes for one pairing"

        receiver.transport.resume_reading()
        await wait_for(lambda: receiver.received == sent, timeout=20)
        assert receiver.digest.hexdigest() == digest.hexdigest()
        (pairing,) = server.status_snapshot()["pairings"]
        assert pairing["bytes_to_hub"] >= sent
        sender.transport.close()
        control.close()
        await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_reconnecting_hub_replaces_its_registration(relay_certs: Path) -> None:
    async def main() -> None:
        server = Relay(*relay_contexts(relay_certs))
        (_, port), *_ = await server.start("127.0.0.1", 0)
        first, second = FakeHub(port, relay_certs), FakeHub(port, relay_certs)
        old = await first.register()
        new = await second.register()
        with pytest.raises(RelayRefused, match="a newer connection of this hub registered") as refused:
            await asyncio.wait_for(old.paired, 5)
        assert refused.value.code == rv.Code.REPLACED
        # a client now reaches the second
        sink = Sink()
        await client_dialer("127.0.0.1", port, client_context(relay_certs, "alice"), HUB_NAME)(sink)
        await wait_for(lambda: bool(second.sinks))
        assert not first.sinks
        assert [h["names"] for h in server.status_snapshot()["hubs"]] == [[HUB_NAME]]
        new.close()
        await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_refusals_say_why(relay_certs: Path) -> None:
    async def main() -> None:
        server = Relay(*relay_contexts(relay_certs))
        (_, port), *_ = await server.start("127.0.0.1", 0)
        dial = client_dialer("127.0.0.1", port, client_context(relay_certs, "alice"), "nowhere.test")
        with pytest.raises(RelayRefused, match=r"no hub named 'nowhere\.test'") as refused:
            await dial(Sink())
        assert refused.value.code == rv.Code.NO_SUCH_HUB
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing said to a stranger
        writer.close()
        assert server.policy.admission.startup_count == 0  # each counted handshake was given back
        await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))
