"""A PortListener for port tests: records every callback and flags the ones the contract forbids
(off the loop thread, after close() returned, data while paused)."""

from __future__ import annotations

import threading
import time

from comtunnel.errors import PortError
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings, Purge


class Recorder:
    def __init__(self) -> None:
        self.data = bytearray()
        self.drained = 0
        self.modem: list[tuple[float, ModemLines]] = []
        self.lost: list[PortError | None] = []
        self.opens: list[bool] = []
        self.settings: list[PortSettings] = []
        self.settings_at: list[float] = []  # when each of ``settings`` came
        self.purges: list[Purge] = []
        self.flow: list[bool] = []
        self.paused = False  # set by the test around pause_reading/resume_reading
        self.closed = False  # set by the test once close() has returned
        self.violations: list[str] = []
        self._thread = threading.get_ident()

    def _check(self, what: str) -> None:
        if threading.get_ident() != self._thread:
            self.violations.append(f"{what} called off the loop thread")
        if self.closed:
            self.violations.append(f"{what} at {time.monotonic():.3f}, after close() returned")

    def port_data(self, data: bytes) -> None:
        self._check("port_data")
        if self.paused:
            self.violations.append(f"port_data({len(data)} bytes) while paused")
        self.data += data

    def port_drained(self) -> None:
        self._check("port_drained")
        self.drained += 1

    def port_modem(self, lines: ModemLines) -> None:
        self._check("port_modem")
        self.modem.append((time.monotonic(), lines))

    def port_flow(self, stopped: bool) -> None:
        self._check("port_flow")
        self.flow.append(stopped)

    def port_lost(self, exc: PortError | None) -> None:
        self._check("port_lost")
        self.lost.append(exc)

    def app_settings(self, settings: PortSettings) -> None:
        self._check("app_settings")
        self.settings.append(settings)
        self.settings_at.append(time.monotonic())

    def app_open(self, is_open: bool) -> None:
        self._check("app_open")
        self.opens.append(is_open)

    def app_purge(self, which: Purge) -> None:
        self._check("app_purge")
        self.purges.append(which)

    def app_control(self, request: ControlRequest) -> None:
        self._check("app_control")

    def lines(self) -> ModemLines:
        return self.modem[-1][1]
