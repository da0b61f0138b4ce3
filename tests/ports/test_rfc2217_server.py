"""The RFC 2217 server port against a hostile client: out-of-range requests are answered, not fatal."""

from __future__ import annotations

import asyncio
import logging

import pytest
from listener import Recorder
from support import wait_for

from comtunnel import lograte
from comtunnel.ports.rfc2217_server import Rfc2217ServerPort
from comtunnel.protocol import rfc2217 as r
from comtunnel.protocol.settings import PortSettings


def test_an_impossible_baud_rate_is_answered_with_the_rate_in_effect(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        rec = Recorder()
        port = Rfc2217ServerPort("p", "127.0.0.1", 0)
        await port.open(rec)
        reader, writer = await asyncio.open_connection(*port.address)
        peer = r.Rfc2217Client()
        peer.start()
        try:
            acks: list[object] = []

            async def exchange(until: int) -> None:
                writer.write(peer.data_to_send())
                while sum(isinstance(e, r.BaudRateAcked) for e in acks) < until:
                    acks.extend(peer.receive_data(await asyncio.wait_for(reader.read(4096), 5)))
                    writer.write(peer.data_to_send())

            for _ in range(3):  # repeated: answered each time, logged once
                peer.set_baudrate(0xFFFFFFFF)
            peer.set_baudrate(100_000_001)
            await exchange(4)
            answered = [e.baudrate for e in acks if isinstance(e, r.BaudRateAcked)]
            assert answered == [PortSettings().baudrate] * 4
            peer.set_baudrate(57600)  # the connection still works, and so do good requests
            await exchange(5)
            assert [e.baudrate for e in acks if isinstance(e, r.BaudRateAcked)][-1] == 57600
            assert port.settings.baudrate == 57600
            peer.send_data(b"\xff\x00\x11\x13\r\n")
            writer.write(peer.data_to_send())
            await wait_for(lambda: len(rec.data) >= 6)
            assert bytes(rec.data) == b"\xff\x00\x11\x13\r\n"
        finally:
            writer.close()
            await port.close()

    with caplog.at_level(logging.INFO, logger="comtunnel"):
        asyncio.run(main())
    refused = [rec for rec in caplog.records if "out of range" in rec.getMessage()]
    assert len(refused) == 1 and "4294967295 baud" in refused[0].getMessage()
    assert not any(rec.exc_info for rec in caplog.records)


def test_the_codec_turns_an_impossible_rate_into_a_query() -> None:
    server = r.Rfc2217Server()
    wire = bytes([255, 250, 44, 1]) + b"\xff\xff" * 4 + bytes([255, 240])  # 0xFF doubled inside SB
    assert server.receive_data(wire) == [r.BaudRateRequested(None, refused=0xFFFFFFFF)]
    assert server.receive_data(bytes([255, 250, 44, 1, 0, 0, 0x25, 0x80, 255, 240])) == [r.BaudRateRequested(9600)]


def test_a_flood_of_malformed_commands_logs_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lograte, "_limiter", lograte.LogLimiter())  # fresh counts, whatever ran before

    async def main() -> None:
        rec = Recorder()
        port = Rfc2217ServerPort("p", "127.0.0.1", 0)
        await port.open(rec)
        reader, writer = await asyncio.open_connection(*port.address)
        try:
            bad = bytes([255, 250, 44, 2, 9, 9, 255, 240])  # SET-DATASIZE with two value bytes
            writer.write(bad * 20_000 + b"still here")
            await wait_for(lambda: bytes(rec.data).endswith(b"still here"), timeout=20)
        finally:
            writer.close()
            await port.close()

    with caplog.at_level(logging.INFO, logger="comtunnel"):
        asyncio.run(main())
    ignored = [r for r in caplog.records if "ignored from" in r.getMessage()]
    assert len(ignored) == lograte.LogLimiter().burst  # one burst, not 20,000 lines
    lograte._limiter.window = 0  # the window ends: the summary says how many were left out
    lograte.flush(logging.getLogger("comtunnel"))
    assert any(
        f"ignored RFC 2217 input from 127.0.0.1: {20_000 - len(ignored)} more" in r.getMessage() for r in caplog.records
    )
