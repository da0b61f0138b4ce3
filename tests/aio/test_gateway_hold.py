"""Hub gateways that do not hold a port forever (issue 13, point 5): takeover and idle timeout
through the hub's LocalGateway with a real device (a PTY pair), on the client through the tunnel,
and the options through the CLI and a config file."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import Proc, PtyDevice, read_exactly, start_hub, wait_for, write_all

from comtunnel.aio.client import Client, ServeSpec
from comtunnel.aio.hub import Hub, LocalGateway, PortSpec
from comtunnel.app.config import hub_config
from comtunnel.cli import build_parser
from comtunnel.config import apply
from comtunnel.errors import UsageError
from comtunnel.tls import client_context, hub_context

IDLE = 0.5

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def gateway_hub(certs: Path, spec: ServeSpec) -> AsyncIterator[tuple[Hub, LocalGateway, PtyDevice]]:
    device = PtyDevice()
    hub = Hub([PortSpec("dev", device.path)], hub_context(certs), serve=[spec])
    await hub.start("127.0.0.1", 0)
    try:
        yield hub, hub.gateways[0], device
    finally:
        await hub.close()
        device.close()


def name_of(writer: asyncio.StreamWriter) -> str:
    host, port = writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


async def holds(hub: Hub, gateway: LocalGateway, writer: asyncio.StreamWriter) -> None:
    """Wait until the registry shows this TCP client as the holder and its device is open."""
    await wait_for(lambda: "dev" in hub.holders and hub.holders["dev"].client.endswith(name_of(writer)))
    await wait_for(gateway.live)


async def connect(gateway: LocalGateway) -> Streams:
    assert gateway.app.address is not None
    return await asyncio.open_connection(*gateway.app.address)


async def from_device(device: PtyDevice, size: int) -> bytes:
    return await asyncio.to_thread(read_exactly, device.master, size, 5)


def test_takeover_through_the_hub_gives_the_device_to_the_new_client(certs: Path) -> None:
    async def main() -> None:
        spec = ServeSpec("dev", "127.0.0.1", 0, "raw", takeover=True)
        async with gateway_hub(certs, spec) as (hub, gateway, device):
            old_reader, old = await connect(gateway)
            await holds(hub, gateway, old)
            old.write(b"from old")
            assert await from_device(device, 8) == b"from old"
            reader, new = await connect(gateway)
            told = await asyncio.wait_for(old_reader.read(), 5)
            assert f"port dev was taken over by {name_of(new)}".encode() in told
            await holds(hub, gateway, new)
            assert hub.holders["dev"].client == f"raw TCP client {name_of(new)}"
            new.write(b"from new")
            assert await from_device(device, 8) == b"from new"
            write_all(device.master, b"to new")
            assert await asyncio.wait_for(reader.readexactly(6), 5) == b"to new"
            old.close()
            new.close()
            await wait_for(lambda: "dev" not in hub.holders)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_without_takeover_the_hub_keeps_the_first_client(certs: Path) -> None:
    async def main() -> None:
        async with gateway_hub(certs, ServeSpec("dev", "127.0.0.1", 0, "raw")) as (hub, gateway, device):
            first_reader, first = await connect(gateway)
            await holds(hub, gateway, first)
            reader, second = await connect(gateway)
            assert b"is in use by" in await asyncio.wait_for(reader.read(), 5)
            second.close()
            assert hub.holders["dev"].client == f"raw TCP client {name_of(first)}"
            write_all(device.master, b"still yours")
            assert await asyncio.wait_for(first_reader.readexactly(11), 5) == b"still yours"
            first.close()
            await wait_for(lambda: "dev" not in hub.holders)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_rfc2217_takeover_through_the_hub(certs: Path) -> None:
    async def main() -> None:
        spec = ServeSpec("dev", "127.0.0.1", 0, "rfc2217", takeover=True)
        async with gateway_hub(certs, spec) as (hub, gateway, _):
            old_reader, old = await connect(gateway)
            await holds(hub, gateway, old)
            _, new = await connect(gateway)
            assert b"taken over" in await asyncio.wait_for(old_reader.read(), 5)
            await holds(hub, gateway, new)
            assert hub.holders["dev"].client == f"RFC 2217 client {name_of(new)}"
            old.close()
            new.close()
            await wait_for(lambda: "dev" not in hub.holders)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_idle_client_frees_the_hub_port(certs: Path) -> None:
    async def main() -> None:
        spec = ServeSpec("dev", "127.0.0.1", 0, "raw", idle_timeout=IDLE)
        async with gateway_hub(certs, spec) as (hub, gateway, device):
            reader, silent = await connect(gateway)
            await holds(hub, gateway, silent)
            write_all(device.master, b"device output is not activity")
            start = time.monotonic()
            told = await asyncio.wait_for(reader.read(), 5)
            assert told.endswith(b"comtunnel: disconnected: nothing received for 0.5 s\r\n"), told
            assert time.monotonic() - start < IDLE + 2
            await wait_for(lambda: "dev" not in hub.holders)
            silent.close()
            reader, chatty = await connect(gateway)  # the next client gets it, and keeps it while it talks
            await holds(hub, gateway, chatty)
            for _ in range(10):
                chatty.write(b".")
                await asyncio.sleep(0.1)
            assert await from_device(device, 10) == b".........."
            assert hub.holders["dev"].client.endswith(name_of(chatty)) and not reader.at_eof()
            chatty.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_options_parse_from_the_command_line_and_toml(tmp_path: Path) -> None:
    parser = build_parser()
    base = ["hub", "--listen", "127.0.0.1:0", "--certs", "c", "--port", "dev=loop://"]
    args = parser.parse_args([*base, "--raw", "dev=0", "--rfc2217", "dev=1"])
    assert [(s.idle_timeout, s.takeover) for s in hub_config(vars(args)).serve] == [(0.0, False)] * 2
    args = parser.parse_args([*base, "--raw", "dev=0", "--gateway-idle", "2.5", "--gateway-takeover"])
    assert [(s.idle_timeout, s.takeover) for s in hub_config(vars(args)).serve] == [(2.5, True)]
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--gateway-idle", "-1"])
    with pytest.raises(UsageError, match="gateway-idle"):
        hub_config({**vars(args), "gateway_idle": -1})
    config = tmp_path / "hub.toml"
    config.write_text('raw = ["dev=0"]\ngateway-idle = 30\ngateway-takeover = true\n')
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    apply(commands["hub"], config)
    args = parser.parse_args(base)
    assert [(s.idle_timeout, s.takeover) for s in hub_config(vars(args)).serve] == [(30.0, True)]


def test_cli_hub_with_takeover_and_idle_timeout(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    device = PtyDevice()
    try:
        start_hub(
            tmp_path,
            certs,
            procs,
            "--port",
            f"dev={device.path}",
            "--raw",
            "dev=127.0.0.1:0",
            "--gateway-idle",
            str(IDLE),
            "--gateway-takeover",
        )
        hub = procs[0]
        tcp_port = int(hub.wait_for(r"dev: raw TCP server on 127\.0\.0\.1:(\d+)").group(1))
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as old:
            hub.wait_for(r"raw TCP connection from 127\.0\.0\.1:\d+\n")
            old.sendall(b"hi")
            assert read_exactly(device.master, 2, 5) == b"hi"
            with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as new:
                assert b"was taken over by" in _read_until_closed(old)
                new.sendall(b"mine")
                assert read_exactly(device.master, 4, 5) == b"mine"
                start = time.monotonic()
                assert b"nothing received for 0.5 s" in _read_until_closed(new)
                assert time.monotonic() - start < IDLE + 3
        hub.wait_for(r"sent nothing for 0\.5 s: disconnected")
        hub.wait_for(r"takes the port from")
    finally:
        device.close()


def _read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"not closed within 5 s; got {out!r}")


def test_client_side_gateway_takeover_and_idle_through_the_tunnel(certs: Path) -> None:
    async def main() -> None:
        hub = Hub([PortSpec("loop", "loop://")], hub_context(certs))
        (_, port), *_ = await hub.start("127.0.0.1", 0)
        spec = ServeSpec("loop", "127.0.0.1", 0, "raw", idle_timeout=IDLE * 2, takeover=True)
        client = Client("127.0.0.1", port, client_context(certs, "alice"), serve=[spec])
        task = asyncio.ensure_future(client.run())
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            address = client.channels["loop"].port.address  # type: ignore[attr-defined]
            old_reader, old = await asyncio.open_connection(*address)
            old.write(b"old")
            assert await asyncio.wait_for(old_reader.readexactly(3), 5) == b"old"
            reader, new = await asyncio.open_connection(*address)
            assert b"was taken over by" in await asyncio.wait_for(old_reader.read(), 5)
            new.write(b"new")
            assert await asyncio.wait_for(reader.readexactly(3), 5) == b"new"
            assert b"nothing received for 1 s" in await asyncio.wait_for(reader.read(), 5)
            old.close()
            new.close()
        finally:
            client.stop()
            await asyncio.wait_for(task, 10)
            await hub.close()

    asyncio.run(asyncio.wait_for(main(), 30))
