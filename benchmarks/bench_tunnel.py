"""First tunnel benchmark: single-port throughput each way and 1-byte echo round trip.

Hub and client run as real `comtunnel` processes over TLS on 127.0.0.1; the device is a PTY pair
driven from this process, the application opens the client's virtual port. A direct PTY pair
(application <-> device with nothing between) is measured in the same run as the reference.

    python benchmarks/bench_tunnel.py [--mib 32] [--echoes 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def raw_pair() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def open_raw(path: str | Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


def pump(src: int, dst: int, size: int) -> float:
    """Write `size` bytes into src while a thread reads them from dst; return MB/s."""
    block = os.urandom(65536)
    got = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal got
        while got < size:
            r, _, _ = select.select([dst], [], [], 10)
            if not r:
                break
            got += len(os.read(dst, 1 << 17))
        done.set()

    start = time.perf_counter()
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    sent = 0
    while sent < size:
        sent += os.write(src, block[: min(len(block), size - sent)])
    done.wait(60)
    elapsed = time.perf_counter() - start
    if got < size:
        raise RuntimeError(f"only {got} of {size} bytes arrived")
    return size / elapsed / 1e6


def echo_rtt(app: int, device: int, count: int) -> list[float]:
    """1-byte echo: the 'device' thread echoes; returns round-trip times in microseconds."""
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            r, _, _ = select.select([device], [], [], 0.2)
            if r:
                os.write(device, os.read(device, 4096))

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    samples = []
    for i in range(count + 50):
        t0 = time.perf_counter()
        os.write(app, bytes([i & 0xFF]))
        r, _, _ = select.select([app], [], [], 5)
        if not r:
            raise RuntimeError("echo timed out")
        os.read(app, 16)
        if i >= 50:  # warm-up
            samples.append((time.perf_counter() - t0) * 1e6)
    stop.set()
    thread.join()
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def tunnel(device_path: str) -> Iterator[tuple[Path, Callable[[], dict[str, float]]]]:
    """Start hub and client processes; yield the client's link path and a CPU-time probe."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cli = [sys.executable, "-m", "comtunnel"]
        subprocess.run(
            [*cli, "certs", "init", str(base / "c"), "--hub-name", "127.0.0.1", "--client", "b"],
            check=True,
            capture_output=True,
        )
        hub_log = (base / "hub.log").open("w+")
        hub = subprocess.Popen(
            [*cli, "hub", "--listen", "127.0.0.1:0", "--certs", str(base / "c"), "--port", f"dev={device_path}"],
            stderr=hub_log,
        )
        procs = [hub]
        try:
            port = _wait_log(base / "hub.log", r"listening on 127\.0\.0\.1:(\d+)", hub)
            link = base / "dev"
            client = subprocess.Popen(
                [
                    *cli,
                    "client",
                    "--connect",
                    f"127.0.0.1:{port}",
                    "--certs",
                    str(base / "c"),
                    "--name",
                    "b",
                    "--link",
                    f"dev={link}",
                ],
                stderr=(base / "client.log").open("w"),
            )
            procs.append(client)
            _wait_log(base / "client.log", r"dev: open on the hub", client)

            def cpu() -> dict[str, float]:
                return {name: _cpu_seconds(p.pid) for name, p in (("hub", hub), ("client", client))}

            yield link, cpu
        finally:
            for p in procs:
                p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def _wait_log(path: Path, pattern: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text())
        if m:
            return m.group(1) if m.groups() else ""
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{pattern!r} not seen in {path}:\n{path.read_text()}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(app: int, device: int, mib: int, echoes: int) -> dict[str, float]:
    size = mib << 20
    up = pump(app, device, size)
    down = pump(device, app, size)
    rtt = echo_rtt(app, device, echoes)
    return {
        "app_to_device_MBps": up,
        "device_to_app_MBps": down,
        "echo_p50_us": pct(rtt, 0.5),
        "echo_p99_us": pct(rtt, 0.99),
        "echo_max_us": max(rtt),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    master, slave, _ = raw_pair()
    results["direct PTY"] = measure(slave, master, args.mib, args.echoes)
    os.close(master)
    os.close(slave)

    master, slave, path = raw_pair()
    with tunnel(path) as (link, cpu):
        app = open_raw(link)
        time.sleep(0.3)
        before = cpu()
        results["comtunnel"] = measure(app, master, args.mib, args.echoes)
        after = cpu()
        moved_mb = 2 * (args.mib << 20) / 1e6
        results["comtunnel"]["cpu_s_per_MB"] = sum(after[k] - before[k] for k in after) / moved_mb
        os.close(app)
    os.close(master)
    os.close(slave)

    keys = ["app_to_device_MBps", "device_to_app_MBps", "echo_p50_us", "echo_p99_us", "echo_max_us", "cpu_s_per_MB"]
    print(f"| path | {' | '.join(keys)} |")
    print(f"|---|{'---|' * len(keys)}")
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.3g}" if k in row else "-" for k in keys) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
