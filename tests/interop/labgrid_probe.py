"""Drive one serial port the way a labgrid test does; run by test_labgrid.py with labgrid's python.

It imports labgrid and the standard library only (labgrid's venv has labgrid's pyserial fork, not
comtunnel). Usage: labgrid_probe.py ENV.yaml NEW_SPEED REOPEN_SPEED. The environment's target
``main`` has one NetworkSerialPort and a SerialDriver. The device at the far end answers every
256 bytes it receives with the same byte values in reverse order. The probe exchanges all 256
byte values at each step: after the open, after setting the baud rate on the open port
(pyserial's ``baudrate``, as labgrid's own code does), and after reopening with a new ``speed``
on the resource. Then it sends a BREAK. labgrid's SerialDriver has no send_break of its own, so
the BREAK goes through the driver's ``serial`` object. It prints ``ok`` and exits 0, or prints
what went wrong and exits 1.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from labgrid import Environment

SENT = bytes(range(256))
ANSWER = SENT[::-1]


def exchange(console: Any, step: str) -> None:
    """Write all 256 byte values and read the device's answer through labgrid's own read()."""
    console.write(SENT)
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < len(ANSWER) and time.monotonic() < deadline:
        try:
            got += console.read(size=len(ANSWER) - len(got), timeout=0.5)
        except Exception as exc:  # pexpect.TIMEOUT: nothing within the timeout; try until the deadline
            if type(exc).__name__ != "TIMEOUT":
                raise
    if got != ANSWER:
        raise SystemExit(f"{step}: the device's answer came back as {len(got)} bytes: {got.hex()}")


def main(config: str, new_speed: int, reopen_speed: int) -> None:
    target = Environment(config_file=config).get_target("main")
    resource = target.get_resource("NetworkSerialPort")
    console = target.get_driver("SerialDriver")  # activates: opens rfc2217://...?ign_set_control
    exchange(console, "after the open")
    console.serial.baudrate = new_speed  # SET-BAUDRATE on the open port; pyserial waits for the ack
    exchange(console, f"at {new_speed} baud")
    target.deactivate(console)
    resource.speed = reopen_speed
    target.activate(console)  # a new session at the resource's new speed
    exchange(console, f"after reopening at {reopen_speed} baud")
    console.serial.send_break(0.05)
    target.deactivate(console)
    print("ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
