"""The hub's line trace (``hub --line-trace FILE``): each line operation applied to a device, timed.

Why: a board that resets on DTR/RTS (esptool's reset, an Arduino's auto-reset) or switches an
RS-485 transceiver on RTS fails in ways that depend on the order and the spacing of those changes.
The trace shows what the device was given, after the tunnel, timed when the device call returned
(in the worker thread that made it, so a busy event loop does not shift the times)::

    46159.383505 2026-12-03T08:37:39.383505Z dev DTR=0

The columns are CLOCK_MONOTONIC seconds (the same clock as any local process's
``time.monotonic()``, so gaps can be compared with what an application made), the UTC time, the
hub port name and the operation: ``open SETTINGS DTR=x RTS=x``, ``DTR=x``, ``RTS=x``,
``BREAK=x``, ``settings SETTINGS``, ``purge RX|TX|RX+TX``, ``close``, ``lost: REASON``; an
operation the device refused ends in ``failed: REASON``.

The file is bounded: once it holds MAX_BYTES it becomes FILE.1 (replacing the previous one) and a
new FILE begins, so the trace never takes more than twice that. Lines are written on the event
loop thread, one short write each; a write that fails stops the trace with one warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from comtunnel.errors import UsageError
from comtunnel.protocol.settings import ControlRequest, Purge

log = logging.getLogger(__name__)

MAX_BYTES = 1 << 20

#: What a port records with: (monotonic time the operation was applied, what it was).
PortTrace = Callable[[float, str], None]


class LineTrace:
    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        try:
            self._file: TextIO | None = self._open()
        except OSError as exc:
            raise UsageError(f"--line-trace {path}: cannot write it: {exc.strerror}") from None
        self._size = self._file.tell()

    def _open(self) -> TextIO:
        return self.path.open("a", encoding="utf-8", buffering=1)

    def for_port(self, name: str) -> PortTrace:
        return lambda when, what: self.record(when, name, what)

    def record(self, when: float, port: str, what: str) -> None:
        if self._file is None:
            return
        wall = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = f"{when:.6f} {wall} {port} {what}\n"
        size = len(line.encode())
        try:
            if self._size + size > self.max_bytes and self._size:
                self._rotate()
            self._file.write(line)
        except OSError as exc:
            log.warning("line trace %s: cannot write (%s); tracing stops", self.path, exc.strerror)
            self.close()
            return
        self._size += size

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = self._open()
        self._size = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def describe_control(request: ControlRequest) -> str:
    """'DTR=0 RTS=1': the lines a request sets, as they were set."""
    lines = (("DTR", request.dtr), ("RTS", request.rts), ("BREAK", request.break_))
    return " ".join(f"{name}={int(value)}" for name, value in lines if value is not None)


def describe_purge(which: Purge) -> str:
    return "purge " + "+".join(name for flag, name in ((Purge.RECEIVE, "RX"), (Purge.TRANSMIT, "TX")) if which & flag)
