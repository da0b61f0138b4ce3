"""``hub --line-trace``: what a real device port (pyserial ``loop://``, a PTY) was given, timed, in a
file that stays bounded."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from listener import Recorder
from support import PtyDevice

from comtunnel.errors import PortNotSupported, UsageError
from comtunnel.ports.device import DevicePort
from comtunnel.ports.linetrace import LineTrace
from comtunnel.ports.open import PortSpec, traced_devices
from comtunnel.protocol.settings import ControlRequest, PortSettings, Purge

LINE = re.compile(r"^(\d+\.\d{6}) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) (.+)$")


def _entries(path: Path) -> list[tuple[float, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        assert m, f"not a trace line: {line!r}"
        out.append((float(m[1]), m[3], m[4]))
    return out


def test_every_operation_on_a_loop_device_is_traced_in_order_with_its_time(tmp_path: Path) -> None:
    path = tmp_path / "lines.trace"

    async def main() -> tuple[float, float]:
        trace = LineTrace(path)
        port = traced_devices(trace)(PortSpec("dev", "loop://"), PortSettings(9600), ControlRequest(dtr=True))
        assert isinstance(port, DevicePort)
        before = time.monotonic()
        await port.open(Recorder())
        await port.set_control(ControlRequest(dtr=False))
        await port.set_control(ControlRequest(rts=True, break_=True))
        await port.set_control(ControlRequest(break_=False))
        await port.apply_settings(PortSettings(115200))
        await port.purge(Purge.BOTH)
        await port.close()
        after = time.monotonic()
        trace.close()
        return before, after

    before, after = asyncio.run(main())
    entries = _entries(path)
    assert [(port, what) for _, port, what in entries] == [
        ("dev", "open 9600,8N1 DTR=1 RTS=0"),
        ("dev", "DTR=0"),
        ("dev", "RTS=1 BREAK=1"),
        ("dev", "BREAK=0"),
        ("dev", "settings 115200,8N1"),
        ("dev", "purge RX+TX"),
        ("dev", "close"),
    ]
    times = [t for t, _, _ in entries]
    assert before <= times[0] and times == sorted(times) and times[-1] <= after  # this process's monotonic clock


def test_a_device_without_the_lines_says_so_in_the_trace(tmp_path: Path) -> None:
    """A PTY has no DTR: the trace says the change was not applied, not that it was."""
    path, device = tmp_path / "lines.trace", PtyDevice()

    async def main() -> None:
        trace = LineTrace(path)
        port = DevicePort(device.path, PortSettings(), ControlRequest(), trace=trace.for_port("pty"))
        await port.open(Recorder())
        with pytest.raises(PortNotSupported, match="no DTR"):
            await port.set_control(ControlRequest(dtr=True))
        await port.close()
        trace.close()

    try:
        asyncio.run(main())
    finally:
        device.close()
    assert [what for _, _, what in _entries(path)][1] == "DTR=1 failed: no DTR"


def test_the_trace_is_bounded_by_one_rotation(tmp_path: Path) -> None:
    path = tmp_path / "lines.trace"
    trace = LineTrace(path, max_bytes=1000)
    for i in range(200):
        trace.record(float(i), "dev", f"DTR={i % 2}")
    trace.close()
    old, new = path.with_name("lines.trace.1"), path
    assert old.stat().st_size <= 1000 and new.stat().st_size <= 1000
    kept = [t for t, _, _ in _entries(old) + _entries(new)]
    assert kept == [float(i) for i in range(200 - len(kept), 200)]  # the newest, none lost between the two
    assert _entries(new)[-1] == (199.0, "dev", "DTR=1")
    again = LineTrace(path, max_bytes=1000)  # a restarted hub appends to what is there
    again.record(200.0, "dev", "close")
    again.close()
    assert _entries(new)[-2:] == [(199.0, "dev", "DTR=1"), (200.0, "dev", "close")]


def test_a_trace_file_that_cannot_be_written_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--line-trace .*missing/lines.trace: cannot write it: No such file"):
        LineTrace(tmp_path / "missing" / "lines.trace")
