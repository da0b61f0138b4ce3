"""Soak: N ports streaming both ways at a baud rate while the connection is cut every few seconds.

Hub and client are `comtunnel` processes; the client reaches the hub through the tests' FaultProxy
on 127.0.0.1, which resets the connection (RST both ways) every ``--cut-every`` seconds. Each port's
device (a PTY driven from here) and application (the client's virtual port) send a paced counter
stream, so any lost, doubled or reordered byte shows. Reports per direction: bytes sent, received,
whether they are byte-exact, and the longest pause an application saw between two reads.

    python benchmarks/soak_resume.py [--ports 8] [--baud 921600] [--seconds 120] [--cut-every 3]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from faultproxy import FaultProxy


def counter_stream(seed: int, size: int) -> bytes:
    """4-byte big-endian counters from ``seed``: any byte out of place is visible."""
    count = size // 4 + 1
    return b"".join(((seed + i) & 0xFFFFFFFF).to_bytes(4, "big") for i in range(count))[:size]


class Direction:
    def __init__(self, name: str, src: int, dst: int, data: bytes, rate: float) -> None:
        self.name = name
        self.src, self.dst, self.data, self.rate = src, dst, data, rate
        self.got = bytearray()
        self.longest_pause = 0.0
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self.writer.start()
        self.reader.start()

    def _write(self) -> None:
        start = time.monotonic()
        view = memoryview(self.data)
        sent = 0
        while sent < len(view):
            due = int((time.monotonic() - start) * self.rate)
            if due <= sent:
                time.sleep(0.002)
                continue
            select.select([], [self.src], [], 1)
            sent += os.write(self.src, view[sent:due])

    def _read(self) -> None:
        last = None
        deadline = time.monotonic() + len(self.data) / self.rate + 90
        while len(self.got) < len(self.data) and time.monotonic() < deadline:
            ready, _, _ = select.select([self.dst], [], [], 1)
            if not ready:
                continue
            chunk = os.read(self.dst, 65536)
            now = time.monotonic()
            if last is not None:
                self.longest_pause = max(self.longest_pause, now - last)
            last = now
            self.got += chunk

    def result(self) -> dict[str, object]:
        got = bytes(self.got)
        exact = got == self.data
        mismatch = next(
            (i for i in range(0, min(len(got), len(self.data)), 4096) if got[i : i + 4096] != self.data[i : i + 4096]),
            None,
        )
        return {
            "direction": self.name,
            "sent": len(self.data),
            "received": len(got),
            "exact": exact,
            "lost": max(0, len(self.data) - len(got)) if not exact else 0,
            "duplicated": max(0, len(got) - len(self.data)) if not exact else 0,
            "first_mismatch_block": mismatch,
            "longest_pause_s": round(self.longest_pause, 3),
        }


def comtunnel(*args: str) -> list[str]:
    return [sys.executable, "-m", "comtunnel", *args]


def wait_log(path: Path, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if needle in text:
            return text
        time.sleep(0.05)
    raise SystemExit(f"{needle!r} not seen in {path}:\n{path.read_text(errors='replace')[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", type=int, default=8)
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--cut-every", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rate = args.baud / 10
    size = int(rate * args.seconds)

    tmp = Path(tempfile.mkdtemp(prefix="comtunnel-soak-"))
    certs = tmp / "certs"
    subprocess.run(
        comtunnel("certs", "init", str(certs), "--hub-name", "127.0.0.1", "--client", "soak"),
        check=True,
        capture_output=True,
    )
    devices = []
    for _ in range(args.ports):
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        devices.append((master, slave, os.ttyname(slave)))
    names = [f"p{i}" for i in range(args.ports)]
    hub_log, client_log = (tmp / "hub.log").open("wb"), (tmp / "client.log").open("wb")
    hub = subprocess.Popen(
        comtunnel(
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--certs",
            str(certs),
            *[f"--port={n}={d[2]}" for n, d in zip(names, devices, strict=True)],
        ),
        stdout=hub_log,
        stderr=subprocess.STDOUT,
    )
    procs = [hub]
    try:
        text = wait_log(tmp / "hub.log", "listening on 127.0.0.1:")
        hub_port = int(text.split("listening on 127.0.0.1:")[1].split()[0])
        with FaultProxy("127.0.0.1", hub_port) as proxy:
            links = [f"--link={n}={tmp / n},{args.baud}" for n in names]
            client = subprocess.Popen(
                comtunnel(
                    "client", "--connect", f"127.0.0.1:{proxy.port}", "--certs", str(certs), "--name", "soak", *links
                ),
                stdout=client_log,
                stderr=subprocess.STDOUT,
            )
            procs.append(client)
            for n in names:
                wait_log(tmp / "client.log", f"{n}: open on the hub")
            apps = []
            for n in names:
                fd = os.open(tmp / n, os.O_RDWR | os.O_NOCTTY)
                tty.setraw(fd)
                apps.append(fd)
            directions = []
            for i, (app, (master, _, _)) in enumerate(zip(apps, devices, strict=True)):
                directions.append(
                    Direction(f"{names[i]} app->device", app, master, counter_stream(i << 24, size), rate)
                )
                directions.append(
                    Direction(f"{names[i]} device->app", master, app, counter_stream((i << 24) | 1 << 23, size), rate)
                )
            started = time.monotonic()
            for d in directions:
                d.start()
            cuts = 0
            while any(d.reader.is_alive() for d in directions):
                time.sleep(args.cut_every)
                if time.monotonic() - started < args.seconds:
                    proxy.cut()
                    cuts += 1
            elapsed = time.monotonic() - started
        results = [d.result() for d in directions]
        summary = {
            "ports": args.ports,
            "baud": args.baud,
            "seconds": round(elapsed, 1),
            "cuts": cuts,
            "resumptions": (tmp / "client.log").read_text(errors="replace").count("session resumed"),
            "bytes_each_way_per_port": size,
            "lost": sum(int(r["lost"]) for r in results),  # type: ignore[call-overload]
            "duplicated": sum(int(r["duplicated"]) for r in results),  # type: ignore[call-overload]
            "all_exact": all(r["exact"] for r in results),
            "longest_pause_s": max(float(r["longest_pause_s"]) for r in results),  # type: ignore[arg-type]
            "dropped_by_hub": "dropping" in (tmp / "hub.log").read_text(errors="replace"),
            "directions": results,
        }
        print(json.dumps({k: v for k, v in summary.items() if k != "directions"}, indent=2))
        for r in results:
            print(
                f"  {r['direction']:<18} {r['received']:>10}/{r['sent']} exact={r['exact']}"
                f" longest pause {r['longest_pause_s']} s"
            )
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
        if not summary["all_exact"]:
            sys.exit(1)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(2)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for master, slave, _ in devices:
            os.close(master)
            os.close(slave)


if __name__ == "__main__":
    main()
