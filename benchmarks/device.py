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

Paced sources of one command share one thread that wakes once a tick and writes every port's due
records: a thread per port, each polling the clock, cost 60% of a core at 32 x 115200 and starved
the forwarders it was measuring (the delay p99 then measured the emulator). A record is stamped
when it falls due, so a port whose PTY is full (the forwarder is behind) shows as delay, not as a
pause of the clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import struct
import sys
import threading
import time
import tty
from collections.abc import Callable
from typing import Any

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
            fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
            self.masters.append(master)
            self.slaves.append(slave)  # held, so the PTY survives an application closing it
            self.paths.append(os.ttyname(slave))
        self.stop = threading.Event()

    def write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.stop.is_set():
            select.select([], [fd], [], 0.5)
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue

    def source(self, port: int, size: int) -> dict[str, float]:
        """Unpaced: as fast as the PTY takes it."""
        fd = self.masters[port]
        count = size // RECORD.size
        sent = 0
        start = time.monotonic()
        while sent < count and not self.stop.is_set():
            due = min(count, sent + 4096)
            self.write_all(fd, records(sent, due - sent, time.monotonic_ns()))
            sent = due
        return {"port": port, "bytes": count * RECORD.size, "seconds": time.monotonic() - start}

    def paced(self, ports: list[int], size: int, rate: float) -> list[dict[str, float]]:
        """Every port in ``ports`` at ``rate`` bytes/s, from one thread: one wake-up a tick for all."""
        fds = [self.masters[p] for p in ports]
        count = size // RECORD.size
        sent = [0] * len(fds)
        pending = [memoryview(b"")] * len(fds)
        # a record's interval, but at least 1 ms and 20 us per port: the wake-ups stay affordable
        tick = max(RECORD.size / rate, 0.001, 2e-5 * len(fds))
        start = time.monotonic()
        ticks = 0
        while not self.stop.is_set():
            due = min(count, int((time.monotonic() - start) * rate / RECORD.size) + 1)
            stamp = time.monotonic_ns()
            busy = False
            for i, fd in enumerate(fds):
                if sent[i] < due:
                    pending[i] = memoryview(bytes(pending[i]) + records(sent[i], due - sent[i], stamp))
                    sent[i] = due
                if pending[i]:
                    with contextlib.suppress(BlockingIOError):
                        pending[i] = pending[i][os.write(fd, pending[i]) :]
                    busy = busy or bool(pending[i])
            if due >= count and not busy:
                break
            ticks += 1
            time.sleep(max(0.0, start + ticks * tick - time.monotonic()))
        seconds = time.monotonic() - start
        return [{"port": p, "bytes": count * RECORD.size, "seconds": seconds} for p in ports]

    def sink(self, port: int, size: int, timeout: float) -> dict[str, float]:
        fd = self.masters[port]
        got = 0
        first = last = None
        deadline = time.monotonic() + timeout
        while got < size and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                with contextlib.suppress(BlockingIOError):
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
                with contextlib.suppress(BlockingIOError):
                    data = os.read(fd, 65536)
                    self.write_all(fd, data)
                    moved += len(data)
        return {"port": port, "bytes": moved}

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select(self.masters, [], [], 0.05)
            for fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 1 << 17)


def args_of(op: str, cmd: dict[str, Any], port: int) -> tuple[object, ...]:
    if op == "source":
        return (port, cmd["bytes"])
    if op == "sink":
        return (port, cmd["bytes"], cmd.get("timeout", 60))
    return (port,)


def collect(results: list[dict[str, float]], answer: dict[str, float] | list[dict[str, float]]) -> None:
    results.extend(answer if isinstance(answer, list) else [answer])


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
        calls: list[tuple[Callable[..., Any], tuple[object, ...]]]
        if op == "source" and cmd.get("rate"):
            calls = [(device.paced, (cmd["ports"], cmd["bytes"], cmd["rate"]))]
        else:
            calls = [(getattr(device, op), args_of(op, cmd, port)) for port in cmd["ports"]]
        for fn, args in calls:
            thread = threading.Thread(target=lambda f=fn, a=args, r=results: collect(r, f(*a)), daemon=True)
            thread.start()
            running.append(thread)
        if op != "echo" and not cmd.get("background"):
            for thread in running:
                thread.join()
            print(json.dumps(results), flush=True)
            running, results = [], []


if __name__ == "__main__":
    main()
