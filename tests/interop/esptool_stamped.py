"""Run the real esptool, recording when each DTR/RTS request leaves pyserial's rfc2217:// client.

Usage: ``python esptool_stamped.py STAMPS.json ESPTOOL-ARGS...``. Nothing of esptool or pyserial is
replaced: the one send function is wrapped to note ``time.monotonic()`` once the SET-CONTROL
request is written to the socket. That is what esptool made, the reference the device's line
trace (``hub --line-trace``, the same clock) is compared with.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import esptool
import serial.rfc2217 as rfc2217

LINES = {
    rfc2217.SET_CONTROL_DTR_ON: "DTR=1",
    rfc2217.SET_CONTROL_DTR_OFF: "DTR=0",
    rfc2217.SET_CONTROL_RTS_ON: "RTS=1",
    rfc2217.SET_CONTROL_RTS_OFF: "RTS=0",
}


def main() -> None:
    path = sys.argv[1]
    sys.argv = ["esptool", *sys.argv[2:]]  # as the `esptool` command runs it
    stamps: list[tuple[float, str]] = []
    send = rfc2217.Serial.rfc2217_send_subnegotiation

    def stamped(self: rfc2217.Serial, option: bytes, value: bytes = b"") -> Any:
        result = send(self, option, value)
        if option == rfc2217.SET_CONTROL and value in LINES:
            stamps.append((time.monotonic(), LINES[value]))
        return result

    rfc2217.Serial.rfc2217_send_subnegotiation = stamped  # type: ignore[method-assign]
    try:
        esptool._main()  # the `esptool` command's entry point: a failure is its message and exit code 2
    finally:
        with open(path, "w") as out:
            json.dump(stamps, out)


if __name__ == "__main__":
    main()
