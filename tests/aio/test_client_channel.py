"""The client's channel: what the hub reports becomes state and one log line per change."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from comtunnel.aio.client.channel import ClientChannel
from comtunnel.ports.pty import PtyPort
from comtunnel.protocol.settings import ModemLines, PortSettings


def test_modem_lines_repeated_by_the_hub_are_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        pty = PtyPort(tmp_path / "dev", PortSettings())
        channel = ClientChannel("p", pty, PortSettings(), True, replay_bound=1 << 20, on_port_lost=lambda c: None)
        await pty.open(channel)
        try:
            lines = ModemLines.CTS | ModemLines.DSR
            for reported in (lines, lines, lines, ModemLines.NONE, ModemLines.NONE):  # a resumption repeats them
                channel.modem_changed(reported)
            assert pty.modem == ModemLines.NONE
        finally:
            await pty.close()

    with caplog.at_level(logging.INFO, logger="comtunnel"):
        asyncio.run(main())
    logged = [r.getMessage() for r in caplog.records if "modem lines" in r.getMessage()]
    assert logged == ["p: modem lines CTS=on DSR=on RI=off CD=off", "p: modem lines CTS=off DSR=off RI=off CD=off"]
