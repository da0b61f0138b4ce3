"""Plain TCP gateways (socat/netcat style): on the hub directly, and on the client through the tunnel."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from support import wait_for

from comtunnel.aio.client import Client, ServeSpec
from comtunnel.aio.hub import Hub, PortSpec
from comtunnel.errors import UsageError
from comtunnel.ports.network import check_listen_address
from comtunnel.tls import client_context, hub_context

ALL_BYTES = bytes(range(256)) * 64


async def _echo_round_trip(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = await asyncio.wait_for(reader.readexactly(len(data)), 10)
    writer.close()
    await writer.wait_closed()
    return got


async def _refused_second(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message = await asyncio.wait_for(reader.read(), 5)  # the server closes after its notice
    writer.close()
    return message


def test_hub_raw_gateway_serves_one_client_at_a_time(certs: Path) -> None:
    async def main() -> None:
        hub = Hub([PortSpec("loop", "loop://")], hub_context(certs), serve=[ServeSpec("loop", "127.0.0.1", 0, "raw")])
        await hub.start("127.0.0.1", 0)
        try:
            gateway_port = hub.gateways[0].app.address[1]  # type: ignore[index]
            assert await _echo_round_trip(gateway_port, ALL_BYTES) == ALL_BYTES
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway_port)
            await wait_for(lambda: "loop" in hub.holders)
            assert b"in use" in await _refused_second(gateway_port)
            writer.write(b"\xff\x00\x11\x13\r\n")
            assert await asyncio.wait_for(reader.readexactly(6), 5) == b"\xff\x00\x11\x13\r\n"
            writer.close()
            await wait_for(lambda: "loop" not in hub.holders)
            for _ in range(3):  # one after another, each from a clean state
                assert await _echo_round_trip(gateway_port, b"again") == b"again"
        finally:
            await hub.close()

    asyncio.run(main())


def test_client_raw_gateway_through_the_tunnel(certs: Path, tmp_path: Path) -> None:
    async def main() -> None:
        hub = Hub([PortSpec("loop", "loop://")], hub_context(certs))
        (_, port), *_ = await hub.start("127.0.0.1", 0)
        client = Client(
            "127.0.0.1", port, client_context(certs, "alice"), serve=[ServeSpec("loop", "127.0.0.1", 0, "raw")]
        )
        task = asyncio.ensure_future(client.run())
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            server = client.channels["loop"].port
            tcp_port = server.address[1]  # type: ignore[attr-defined]
            data = os.urandom(256 * 1024) + ALL_BYTES
            assert await _echo_round_trip(tcp_port, data) == data
            assert await _echo_round_trip(tcp_port, b"second session") == b"second session"
        finally:
            client.stop()
            await asyncio.wait_for(task, 10)
            await hub.close()

    asyncio.run(main())


def test_plaintext_listeners_stay_on_loopback_unless_allowed() -> None:
    check_listen_address("127.0.0.1", False, "--raw x")
    check_listen_address("::1", False, "--raw x")
    with pytest.raises(UsageError, match="--allow-remote"):
        check_listen_address("0.0.0.0", False, "--raw x")
    check_listen_address("0.0.0.0", True, "--raw x")
