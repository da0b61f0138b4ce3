"""The TCP listeners' hold on a port (issue 13, point 5): keepalive, idle timeout, takeover.

Real sockets on 127.0.0.1, the port's listener a Recorder; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import serial
from listener import Recorder
from support import wait_for

from comtunnel.ports.gateway_policy import KEEPALIVE, Arrival, IdleTimer, arrival
from comtunnel.ports.network import NetworkServerPort
from comtunnel.ports.rfc2217_server import Rfc2217ServerPort

IDLE = 0.5

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(body: Callable[[], Awaitable[None]], timeout: float = 20, loop: str = "asyncio") -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)

    if loop == "uvloop":  # what the CLI runs on where it is installed
        pytest.importorskip("uvloop").run(main())
    else:
        asyncio.run(main())


@contextlib.asynccontextmanager
async def serving(port: NetworkServerPort) -> AsyncIterator[Recorder]:
    rec = Recorder()
    await port.open(rec)
    try:
        yield rec
    finally:
        await port.close()


async def connect(port: NetworkServerPort, rec: Recorder) -> Streams:
    """A TCP client, returned once the port saw it open the port."""
    assert port.address is not None
    opens = rec.opens.count(True)
    streams = await asyncio.open_connection(*port.address)
    await wait_for(lambda: rec.opens.count(True) > opens)
    return streams


async def until_closed(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        writer.close()


# --- the plain policy -----------------------------------------------------------------------------


def test_arrival_policy() -> None:
    assert arrival(busy=False, takeover=False) is Arrival.ACCEPT
    assert arrival(busy=False, takeover=True) is Arrival.ACCEPT
    assert arrival(busy=True, takeover=False) is Arrival.REFUSE
    assert arrival(busy=True, takeover=True) is Arrival.TAKE_OVER


def test_idle_timer_counts_silence_only() -> None:
    assert IdleTimer(0, 100.0).deadline() is None
    assert not IdleTimer(0, 100.0).expired(1e9)
    timer = IdleTimer(10, 100.0)
    assert timer.deadline() == 110.0
    assert not timer.expired(109.9)
    timer.touch(105.0)
    assert timer.deadline() == 115.0 and not timer.expired(110.0)
    timer.touch(101.0)  # late news never moves the clock back
    assert timer.deadline() == 115.0
    assert not timer.expired(200.0, held_back=True)  # held back by us: not the client's silence
    assert timer.deadline() == 210.0
    assert timer.expired(210.0)
    with pytest.raises(ValueError):
        IdleTimer(-1, 0.0)


# --- keepalive ------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("cls", [NetworkServerPort, Rfc2217ServerPort])
def test_accepted_connections_have_tcp_keepalive(cls: type[NetworkServerPort], loop: str) -> None:
    async def body() -> None:
        port = cls("ka", "127.0.0.1", 0)
        async with serving(port) as rec:
            _, writer = await connect(port, rec)
            assert port._active is not None and port._active.transport is not None
            sock = port._active.transport.get_extra_info("socket")  # the server's side of it
            assert sock.getsockname() == writer.get_extra_info("peername")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            idle, interval, count = KEEPALIVE
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == idle
            if hasattr(socket, "TCP_KEEPINTVL"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == interval
            if hasattr(socket, "TCP_KEEPCNT"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == count
            close(writer)

    run(body, loop=loop)


# --- idle timeout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [NetworkServerPort, Rfc2217ServerPort])
def test_a_silent_client_is_disconnected_and_the_port_freed(cls: type[NetworkServerPort]) -> None:
    async def body() -> None:
        port = cls("idle", "127.0.0.1", 0, idle_timeout=IDLE)
        async with serving(port) as rec:
            reader, writer = await connect(port, rec)
            start = time.monotonic()
            told = await until_closed(reader)
            took = time.monotonic() - start
            assert b"comtunnel: disconnected: nothing received for 0.5 s\r\n" in told
            assert IDLE * 0.8 < took < IDLE + 2, took
            assert rec.opens == [True, False] and port.peer == "nobody"
            close(writer)
            reader, writer = await connect(port, rec)  # the next client gets the port
            writer.write(b"hello")
            await wait_for(lambda: bytes(rec.data).endswith(b"hello"))
            close(writer)

    run(body)


def test_a_chatty_client_keeps_the_port_but_device_output_does_not() -> None:
    async def body() -> None:
        port = NetworkServerPort("idle", "127.0.0.1", 0, idle_timeout=IDLE)
        async with serving(port) as rec:
            reader, writer = await connect(port, rec)
            for i in range(15):  # 1.5 s: three timeouts' worth, never 0.5 s silent
                writer.write(b"%d," % i)
                last_write = time.monotonic()
                await asyncio.sleep(0.1)
            assert rec.opens == [True] and not reader.at_eof()
            await wait_for(lambda: bytes(rec.data).endswith(b"14,"))
            # now only the device talks: the client is silent, and is cut all the same
            start = time.monotonic()
            while not reader.at_eof() and time.monotonic() - start < IDLE + 2:
                port.write(b"from the device\r\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(65536), 0.1)
            assert reader.at_eof() and rec.opens == [True, False]
            assert IDLE * 0.9 < time.monotonic() - last_write < IDLE + 2
            close(writer)

    run(body)


def test_a_client_the_port_holds_back_is_not_idle() -> None:
    async def body() -> None:
        port = NetworkServerPort("idle", "127.0.0.1", 0, idle_timeout=IDLE)
        async with serving(port) as rec:
            port.pause_reading()  # e.g. the device has not taken the last bytes yet
            reader, writer = await connect(port, rec)
            await asyncio.sleep(IDLE * 3)
            assert rec.opens == [True] and not reader.at_eof()
            port.resume_reading()
            assert b"nothing received" in await until_closed(reader)
            assert rec.opens == [True, False]
            close(writer)

    run(body)


def test_without_idle_timeout_a_silent_client_stays() -> None:
    async def body() -> None:
        port = NetworkServerPort("idle", "127.0.0.1", 0)
        async with serving(port) as rec:
            reader, writer = await connect(port, rec)
            await asyncio.sleep(IDLE * 2)
            assert rec.opens == [True] and not reader.at_eof()
            close(writer)

    run(body)


# --- takeover -------------------------------------------------------------------------------------


def test_without_takeover_the_second_client_is_refused() -> None:
    async def body() -> None:
        port = NetworkServerPort("one", "127.0.0.1", 0)
        async with serving(port) as rec:
            first_reader, first = await connect(port, rec)
            assert port.address is not None
            reader, second = await asyncio.open_connection(*port.address)
            assert b"is in use by" in await until_closed(reader)
            first.write(b"still mine")
            await wait_for(lambda: bytes(rec.data) == b"still mine")
            assert rec.opens == [True] and not first_reader.at_eof()
            close(first)
            close(second)

    run(body)


def test_takeover_gives_the_port_to_the_new_client_from_a_clean_state() -> None:
    async def body() -> None:
        port = NetworkServerPort("one", "127.0.0.1", 0, takeover=True)
        async with serving(port) as rec:
            old_reader, old = await connect(port, rec)
            port.pause_reading()  # what the old client sends now is held for it...
            old.write(b"old session")
            await asyncio.sleep(0.1)
            reader, new = await connect(port, rec)
            told = await until_closed(old_reader)
            host, tcp_port = new.get_extra_info("sockname")[:2]
            new_name = f"{host}:{tcp_port}"
            assert f"comtunnel: port one was taken over by {new_name}\r\n".encode() in told
            assert rec.opens == [True, False, True]
            assert port.peer == new_name
            port.resume_reading()  # ...and never reaches the new session
            new.write(b"new session")
            await wait_for(lambda: bytes(rec.data) == b"new session")
            port.write(b"to the new one")
            assert await asyncio.wait_for(reader.readexactly(14), 5) == b"to the new one"
            close(old)
            await asyncio.sleep(0.05)
            assert rec.opens == [True, False, True]  # the old one's close changes nothing
            close(new)
            await wait_for(lambda: rec.opens == [True, False, True, False])

    run(body)


def test_rfc2217_takeover_resets_the_line_settings() -> None:
    async def body() -> None:
        port = Rfc2217ServerPort("rfc", "127.0.0.1", 0, takeover=True)
        async with serving(port) as rec:
            initial = port.settings
            assert port.address is not None
            url = f"rfc2217://127.0.0.1:{port.address[1]}"
            old = await asyncio.to_thread(serial.serial_for_url, url, baudrate=57600, timeout=2)
            try:
                await wait_for(lambda: port.settings.baudrate == 57600)
                assert initial.baudrate != 57600 and port.control.dtr
                _, new = await connect(port, rec)
                assert port.settings == initial and port.control.dtr is False
                assert rec.opens[-3:] == [True, False, True]
                close(new)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(old.close)

    run(body)
