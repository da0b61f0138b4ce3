"""The pyserial-backed device port against loop://, a PTY standing in for a device, and spy://."""

from __future__ import annotations

import asyncio
import os
import termios
from pathlib import Path

import pytest
import serial
from support import PtyDevice, Recorder, read_exactly, wait_for, write_all

from comtunnel.errors import PortBusy, PortGone, PortNotSupported, PortUnavailable
from comtunnel.ports.device import DevicePort
from comtunnel.protocol.settings import ControlRequest, ModemLines, Parity, PortSettings, Purge, StopBits

OFF = ControlRequest(dtr=False, rts=False)
PAYLOAD = os.urandom(1 << 20) + bytes(range(256))


async def _write_all(port: DevicePort, data: bytes) -> None:
    for i in range(0, len(data), 65536):
        port.write(data[i : i + 65536])
        await asyncio.sleep(0)


def test_loop_device_echoes_every_byte_and_reports_dtr_rts_as_dsr_cts() -> None:
    async def main() -> None:
        rec = Recorder()
        port = DevicePort("loop://", PortSettings(115200), OFF)
        await port.open(rec)
        try:
            await wait_for(lambda: bool(rec.modem))
            assert rec.modem[-1] & (ModemLines.DSR | ModemLines.CTS) == ModemLines.NONE  # opened with lines off
            await _write_all(port, PAYLOAD)
            await wait_for(lambda: len(rec.data) >= len(PAYLOAD), 20)
            assert bytes(rec.data) == PAYLOAD
            await wait_for(lambda: rec.drained > 0)
            await port.set_control(ControlRequest(dtr=True))
            took = await wait_for(lambda: rec.modem[-1] & ModemLines.DSR == ModemLines.DSR, 1)
            assert took < 0.1
            await port.set_control(ControlRequest(rts=True, dtr=False))
            await wait_for(lambda: rec.modem[-1] & (ModemLines.DSR | ModemLines.CTS) == ModemLines.CTS, 1)
            applied = await port.apply_settings(PortSettings(250000, 7, Parity.EVEN, StopBits.TWO))
            assert applied == PortSettings(250000, 7, Parity.EVEN, StopBits.TWO)
            port.pause_reading()
            port.write(b"later")
            await asyncio.sleep(0.2)
            assert not rec.data.endswith(b"later")
            port.resume_reading()
            await wait_for(lambda: rec.data.endswith(b"later"))
        finally:
            await port.close()
            await port.close()  # idempotent

    asyncio.run(main())


@pytest.mark.parametrize("spy", [False, True])
def test_pty_device_data_settings_and_missing_modem_lines(spy: bool) -> None:
    device = PtyDevice()

    async def main() -> None:
        rec = Recorder()
        url = f"spy://{device.path}?file=/dev/null" if spy else device.path
        port = DevicePort(url, PortSettings(115200), OFF)
        await port.open(rec)
        try:
            reader = asyncio.ensure_future(asyncio.to_thread(read_exactly, device.master, len(PAYLOAD)))
            await _write_all(port, PAYLOAD)
            assert await reader == PAYLOAD
            await asyncio.to_thread(write_all, device.master, PAYLOAD)
            await wait_for(lambda: len(rec.data) >= len(PAYLOAD), 20)
            assert bytes(rec.data) == PAYLOAD
            await port.apply_settings(PortSettings(57600, stopbits=StopBits.TWO))
            attrs = termios.tcgetattr(device.slave)
            assert attrs[5] == termios.B57600 and attrs[2] & termios.CSTOPB
            with pytest.raises(PortNotSupported, match="no DTR"):
                await port.set_control(ControlRequest(dtr=True))
            await port.purge(Purge.BOTH)
            assert not port.modem_supported or spy
        finally:
            await port.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


def test_open_errors_are_clear(tmp_path: Path) -> None:
    device = PtyDevice()

    async def main() -> None:
        with pytest.raises(PortUnavailable, match="no such device"):
            await DevicePort(str(tmp_path / "ttyUSB9"), PortSettings(), OFF).open(Recorder())
        with pytest.raises(PortUnavailable, match="cannot use"):
            await DevicePort("nosuch://x", PortSettings(), OFF).open(Recorder())
        holder = serial.Serial(device.path, exclusive=True)
        try:
            with pytest.raises(PortBusy, match="in use"):
                await DevicePort(device.path, PortSettings(), OFF).open(Recorder())
        finally:
            holder.close()

    try:
        asyncio.run(main())
    finally:
        device.close()


def test_a_vanishing_device_is_reported_once() -> None:
    device = PtyDevice()

    async def main() -> None:
        rec = Recorder()
        port = DevicePort(device.path, PortSettings(), OFF)
        await port.open(rec)
        os.close(device.master)  # the 'USB cable' is pulled: reads now fail with EIO
        os.close(device.slave)
        await wait_for(lambda: bool(rec.lost), 2)
        await asyncio.sleep(0.1)
        assert len(rec.lost) == 1 and isinstance(rec.lost[0], PortGone)
        with pytest.raises(PortGone):
            port.write(b"x")
        await port.close()

    asyncio.run(main())
