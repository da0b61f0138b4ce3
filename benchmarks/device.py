"""Emulated serial devices for the benchmarks, in a process of their own (as real devices would be).

Creates N PTY pairs, prints their slave paths as one JSON line, then obeys one JSON command per
stdin line, answering one JSON line each:

    {"op": "source", "ports": [0, 1], "bytes": N, "rate": R}   write N bytes per port (R bytes/s, 0 = unpaced)
    {"op": "sink", "ports": [0], "bytes": N, "timeout": T}     read N bytes per port; report when they came
    {"op": "echo", "ports": [0]}                               echo everything back until "stop"
    {"op": "stop"} / {"op": "drain", "seconds": S} / {"op": "quit"}

"echo", and any command with "background": true, run until "stop", which answers for all of them.

Source data is a stream of 16-byte records (sequence number, CLOCK_MONOTONIC ns at write), so the
reader counts lost bytes and measures device-to-application delay without a shared buffer.
"""

from __future__ import annotations

import json
import os
import select
import struct
import sys
import threading
import time
import tty

RECORD = struct.Struct(">QQ")


def records(start: int, count: int, now_ns: int) -> bytes:
    """``count`` records stamped with one write time (one write, one stamp: cheap at 12 Mbaud x 32)."""
    return RECORD.pack(start, now_ns) * count


class Device:
    def __init__(self, count: int) -> None:
        self.masters: list[int] = []
        self.paths: list[str] = []
        self.slaves: list[int] = []
        for _ in range(count):
            master, slave = os.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            self.masters.append(master)
            self.slaves.append(slave)  # held, so the PTY survives an application closing it
            self.paths.append(os.ttyname(slave))
        self.stop = threading.Event()

    def source(self, port: int, size: int, rate: float) -> dict[str, float]:
        fd = self.masters[port]
        count = size // RECORD.size
        sent = 0
        start = time.monotonic()
        while sent < count and not self.stop.is_set():
            if rate:
                due = min(count, int((time.monotonic() - start) * rate / RECORD.size) + 1)
                if due <= sent:
                    time.sleep(0.0005)
                    continue
            else:
                due = min(count, sent + 4096)
            data = records(sent, due - sent, time.monotonic_ns())
            view = memoryview(data)
            while view:
                select.select([], [fd], [], 5)
                view = view[os.write(fd, view) :]
            sent = due
        return {"port": port, "bytes": count * RECORD.size, "seconds": time.monotonic() - start}

    def sink(self, port: int, size: int, timeout: float) -> dict[str, float]:
        fd = self.masters[port]
        got = 0
        first = last = None
        deadline = time.monotonic() + timeout
        while got < size and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                got += len(os.read(fd, 1 << 17))
                last = time.monotonic()
                first = first or last
        return {"port": port, "bytes": got, "first": first or 0.0, "last": last or 0.0}

    def echo(self, port: int) -> dict[str, float]:
        fd = self.masters[port]
        moved = 0
        while not self.stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data = os.read(fd, 65536)
                os.write(fd, data)
                moved += len(data)
        return {"port": port, "bytes": moved}

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select(self.masters, [], [], 0.05)
            for fd in ready:
                os.read(fd, 1 << 17)


def main() -> None:
    # Each port is a thread; with the default 5 ms GIL switch interval a flooding port would delay
    # another port's echo by milliseconds here, in the emulator, and the benchmark would blame the
    # forwarder. Real devices are independent: switch often.
    sys.setswitchinterval(0.0001)
    device = Device(int(sys.argv[1]))
    print(json.dumps(device.paths), flush=True)
    running: list[threading.Thread] = []
    results: list[dict[str, float]] = []
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op == "stop":
            device.stop.set()
            for thread in running:
                thread.join()
            print(json.dumps(results), flush=True)
            running, results = [], []
            device.stop.clear()
            continue
        if op == "drain":
            device.drain(cmd["seconds"])
            print("[]", flush=True)
            continue
        for port in cmd["ports"]:
            if op == "source":
                args: tuple[object, ...] = (port, cmd["bytes"], cmd.get("rate", 0))
            elif op == "sink":
                args = (port, cmd["bytes"], cmd.get("timeout", 60))
            else:
                args = (port,)
            fn = getattr(device, op)
            thread = threading.Thread(target=lambda f=fn, a=args, r=results: r.append(f(*a)), daemon=True)
            thread.start()
            running.append(thread)
        if op != "echo" and not cmd.get("background"):
            for thread in running:
                thread.join()
            print(json.dumps(results), flush=True)
            running, results = [], []


if __name__ == "__main__":
    main()
