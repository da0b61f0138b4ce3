"""A hub under a flood of handshakes still serves a client with a valid certificate (real TLS on
127.0.0.1; the flood and the good client come from different loopback addresses, 127.0.0.1 and
127.0.0.2, as two hosts would)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from pathlib import Path

import pytest
from support import running_hub, wait_for

from comtunnel import lograte
from comtunnel.policy.admission import AdmissionLimits, BufferBudget
from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import FrameDecoder
from comtunnel.protocol.errors import ErrorCode
from comtunnel.protocol.limits import HUB_MAX_FRAME
from comtunnel.protocol.mux import Connection, Role
from comtunnel.tls import client_context


def hello_from(source: str, port: int, certs: Path) -> fr.Frame:
    """A good client's TLS handshake from ``source``; returns the hub's first frame (its HELLO)."""
    context = client_context(certs, "alice")
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            decoder = FrameDecoder()
            while True:
                data = tls.recv(65536)
                if not data:
                    raise ConnectionResetError("the hub closed the connection")
                frames = decoder.feed(data)
                if frames:
                    return frames[0]


def test_a_silent_flood_from_one_address_cannot_lock_out_a_good_client(certs: Path) -> None:
    async def main() -> None:
        async with running_hub(certs, {"p": "loop://"}) as (hub, port):
            flood = []
            for _ in range(300):  # more than the old shared cap of 256; none ever says a word
                flood.append(await asyncio.open_connection("127.0.0.1", port))
            try:
                await wait_for(lambda: hub.admission.refused["startup"] >= 300 - hub.admission.limits.per_source)
                assert hub.admission.startups["127.0.0.1"] == hub.admission.limits.per_source
                for _ in range(3):
                    frame = await asyncio.to_thread(hello_from, "127.0.0.2", port, certs)
                    assert isinstance(frame, fr.Hello)
            finally:
                for _, writer in flood:
                    writer.close()
            await wait_for(lambda: hub.admission.startup_count == 0 and hub.admission.sessions == 0)

    asyncio.run(main())


def test_a_silent_handshake_is_dropped_after_the_deadline(certs: Path) -> None:
    async def main() -> None:
        async with running_hub(certs, {"p": "loop://"}) as (hub, port):
            hub.admission.limits = AdmissionLimits(handshake_timeout=0.5)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            start = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the hub
            assert 0.4 < time.monotonic() - start < 3
            writer.close()
            await wait_for(lambda: hub.admission.startup_count == 0)

    asyncio.run(main())


def test_sessions_have_a_budget_of_their_own(certs: Path) -> None:
    async def main() -> None:
        async with running_hub(certs, {"p": "loop://"}) as (hub, port):
            hub.admission.limits = AdmissionLimits(begin=1, full=1, per_source=1, sessions=2)
            held = []
            for count in (1, 2):  # two sessions connected: the one handshake slot is free after each
                context = client_context(certs, "alice")
                held.append(await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"))
                await wait_for(lambda: hub.admission.sessions == count)  # noqa: B023 (awaited at once)
            assert hub.admission.startup_count == 0
            context = client_context(certs, "bob")
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
            data = await asyncio.wait_for(reader.read(65536), 5)
            frames = FrameDecoder().feed(data)
            goaway = [f for f in frames if isinstance(f, fr.GoAway)]
            assert goaway and "the hub is full: 2 sessions connected, the limit" in goaway[0].message
            writer.close()
            for _, w in held:
                w.close()
            await wait_for(lambda: hub.admission.sessions == 0 and hub.admission.startup_count == 0)

    asyncio.run(main())


def test_incomplete_frames_of_all_connections_together_are_bounded(certs: Path) -> None:
    """Each connection may stop just short of the end of a maximal frame; together they may not
    hold more than the hub's budget, and what a closed connection held is given back."""

    async def main() -> None:
        async with running_hub(certs, {"p": "loop://"}) as (hub, port):
            hub.buffer_budget = BufferBudget(1 << 20)
            partial = (HUB_MAX_FRAME).to_bytes(4, "big") + b"\x00" * (HUB_MAX_FRAME - 1)
            conns = []
            for _ in range(12):  # 12 x 128 KiB: only 7 fit in 1 MiB
                context = client_context(certs, "alice")
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
                )
                writer.write(Connection(Role.CLIENT).data_to_send() + partial)
                await writer.drain()
                conns.append((reader, writer))
            await wait_for(lambda: hub.buffer_budget.held >= 7 * (HUB_MAX_FRAME - 1), timeout=10)
            closed = 0
            for reader, _ in conns:
                data = b""
                with contextlib.suppress(TimeoutError):  # a connection still up says nothing more
                    while chunk := await asyncio.wait_for(reader.read(1 << 20), 0.5):
                        data += chunk
                goaways = [f for f in FrameDecoder().feed(data) if isinstance(f, fr.GoAway)]
                if goaways:
                    assert goaways[0].code == ErrorCode.HUB_BUSY and "incomplete frames" in goaways[0].message
                    closed += 1
            assert closed == 12 - 7
            assert hub.buffer_budget.held <= hub.buffer_budget.limit
            for _, writer in conns:
                writer.close()
            await wait_for(lambda: hub.buffer_budget.held == 0 and hub.admission.sessions == 0)

    asyncio.run(main())


def test_a_frame_longer_than_a_client_needs_is_refused_at_its_length(certs: Path) -> None:
    async def main() -> None:
        async with running_hub(certs, {"p": "loop://"}) as (hub, port):
            context = client_context(certs, "alice")
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
            writer.write(Connection(Role.CLIENT).data_to_send() + (HUB_MAX_FRAME + 1).to_bytes(4, "big"))
            data = b""
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                data += chunk
            goaway = [f for f in FrameDecoder().feed(data) if isinstance(f, fr.GoAway)]
            assert goaway and goaway[0].code == ErrorCode.FRAME_TOO_LARGE
            assert hub.buffer_budget.held == 0
            writer.close()

    asyncio.run(main())


def test_failed_handshakes_are_logged_a_few_times_then_counted(
    certs: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 handshakes without a client certificate once gave 300 warnings in 1.3 s."""
    monkeypatch.setattr(lograte, "_limiter", lograte.LogLimiter())
    no_cert = ssl.create_default_context(cafile=str(certs / "ca.crt"))  # verifies the hub, offers no certificate

    def certless(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with contextlib.suppress(ssl.SSLError, OSError):
                with no_cert.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.recv(1)  # TLS 1.3: the refusal arrives after the client's side of the handshake

    async def main() -> None:
        async with running_hub(certs, {"p": "loop://"}) as (hub, port):
            for _ in range(100):
                await asyncio.to_thread(certless, port)
            await wait_for(lambda: hub.admission.startup_count == 0)

    with caplog.at_level(logging.WARNING, logger="comtunnel"):
        asyncio.run(main())
    failed = [r for r in caplog.records if "TLS handshake with" in r.getMessage()]
    assert 1 <= len(failed) <= lograte.LogLimiter().burst, len(failed)
    lograte._limiter.window = 0
    lograte.flush(logging.getLogger("comtunnel"))
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("failed TLS handshakes from")]
    assert summary and f"{100 - len(failed)} more" in summary[0]
