"""Through a relay against direct, in one run (issue 16): what `comtunnel relay` adds per message and
what it costs in bulk throughput, on 127.0.0.1 through real PTYs.

    python benchmarks/relay.py [--reps 3] [--echoes 2000] [--mib 32] [--json out.json]

Setups, measured alternately so drift hits all: hub and client dialling each other directly
(`hub --listen`, `client --connect`); both dialling a relay (`hub --relay`, `client --relay`),
where the session is TLS inside the relay's TLS on each leg; and, with socat installed, the
direct set-up with a socat TCP forwarder in between: one hop that only copies, in C, the floor
for what any relay process adds on this machine. The device is benchmarks/device.py.
Figures: 1-byte echo p50/p99 (what the relay adds per round trip, which crosses it twice),
unpaced bulk each way, and the CPU of every process per MB (the relay's own shown apart).
Targets: the relay adds < 100 µs to the echo p50, and bulk through it is >= 0.5x direct each way.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # a script beside run.py, sharing its harness
    DeviceProc,
    PtyApp,
    Setup,
    _procs_stop,
    app_to_device,
    cpu_seconds,
    device_to_app,
    echo,
    free_port,
    percentile,
    spawn,
    stop_all_spawned,
    wait_path,
    wait_port,
    wait_port_listen,
)

HUB_NAME = "hub.bench"  # verified inside the session only; the relay is dialled as 127.0.0.1


def make_certs(tmp: Path) -> Path:
    from comtunnel.certs import init_certs, issue_relay

    certs = tmp / "certs"
    certs.mkdir()
    init_certs(certs, [HUB_NAME], ["bench"])
    issue_relay(certs, ["127.0.0.1"])
    return certs


def comtunnel(*args: str) -> list[str]:
    return [sys.executable, "-m", "comtunnel", "-q", *args]


def wait_log(path: Path, pattern: str, timeout: float = 15) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if m := re.search(pattern, path.read_text(errors="replace")):
            return m
        time.sleep(0.05)
    raise RuntimeError(f"{pattern!r} not in {path}:\n{path.read_text(errors='replace')}")


def start(tmp: Path, certs: Path, mode: str) -> tuple[Setup, int | None]:
    """A hub serving the device's port and a client linking it to a PTY: ``direct``, through a
    ``relay``, or direct with a ``socat`` TCP forwarder in between (one hop in C that only copies:
    the floor for any relay on this machine). Returns the set-up and the middle process's PID."""
    relayed = mode == "relay"
    device = DeviceProc(1)
    log_path = tmp / f"{mode}-{time.monotonic_ns()}.log"
    log = log_path.open("wb")
    procs = []
    relay_pid = None
    port = free_port()
    if relayed:
        relay = spawn(
            [sys.executable, "-m", "comtunnel", "-v", "relay", "--listen", f"127.0.0.1:{port}",
             "--certs", str(certs), "--control-socket", "none"],
            stdout=log, stderr=log,
        )  # fmt: skip
        procs.append(relay)
        relay_pid = relay.pid
        wait_port(port)
        where = ["--relay", f"127.0.0.1:{port}"]
        hub_where = where
    else:
        where = ["--connect", f"127.0.0.1:{port}"]
        hub_where = ["--listen", f"127.0.0.1:{port}"]
    if mode == "socat":
        middle = free_port()
        forwarder = spawn(
            ["socat", f"TCP-LISTEN:{middle},bind=127.0.0.1,reuseaddr,nodelay", f"TCP:127.0.0.1:{port},nodelay"],
            stdout=log, stderr=log,
        )  # fmt: skip
        procs.append(forwarder)
        relay_pid = forwarder.pid
        where = ["--connect", f"127.0.0.1:{middle}"]
    hub = spawn(
        comtunnel("hub", *hub_where, "--certs", str(certs), "--control-socket", "none", f"--port=p0={device.paths[0]}"),
        stdout=log,
        stderr=log,
    )
    procs.append(hub)
    if relayed:
        wait_log(log_path, r"hub hub\.bench .* registered")  # the hub runs -q: the relay's -v log says it
    else:
        wait_port(port)
        if mode == "socat":
            wait_port_listen(middle)
    links = tmp / f"links-{time.monotonic_ns()}"
    client = spawn(
        comtunnel("client", *where, "--hub-name", HUB_NAME, "--certs", str(certs), "--name", "bench",
                  f"--link=p0={links / 'p0'}"),
        stdout=log, stderr=log,
    )  # fmt: skip
    procs.append(client)
    wait_path(links / "p0")
    time.sleep(0.5)
    pids = [hub.pid, client.pid] + ([relay_pid] if relay_pid else [])
    return Setup([PtyApp(str(links / "p0"))], pids, device, _procs_stop(procs[::-1])), relay_pid


@contextmanager
def running(tmp: Path, certs: Path, mode: str) -> Iterator[tuple[Setup, int | None]]:
    setup, relay_pid = start(tmp, certs, mode)
    try:
        yield setup, relay_pid
    finally:
        for app in setup.apps:
            app.close()
        setup.stop()
        setup.device.close()


def measure(setup: Setup, relay_pid: int | None, echoes: int, size: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    samples = echo(setup, 1, echoes)
    figures["echo_p50_us"] = percentile(samples, 50)
    figures["echo_p99_us"] = percentile(samples, 99)
    for key, bulk in (("up", app_to_device), ("down", device_to_app)):
        relay_cpu0 = cpu_seconds([relay_pid]) if relay_pid else 0.0
        result = bulk(setup, size)
        figures[f"{key}_mbps"] = result["mbps"]
        figures[f"{key}_cpu_per_mb"] = result["cpu_per_mb"]
        if relay_pid:
            figures[f"{key}_relay_cpu_per_mb"] = (cpu_seconds([relay_pid]) - relay_cpu0) / (size / 1e6)
        if not result["complete"]:
            raise RuntimeError(f"bulk {key}: incomplete")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    modes = ["direct", "relay"] + (["socat"] if shutil.which("socat") else [])
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="comtunnel-relay-bench-") as name:
            tmp = Path(name)
            certs = make_certs(tmp)
            for rep in range(args.reps):
                for which in modes if rep % 2 == 0 else modes[::-1]:
                    with running(tmp, certs, which) as (setup, relay_pid):
                        runs[which].append(measure(setup, relay_pid, args.echoes, args.mib << 20))
                    print(f"[{time.monotonic() - started:5.0f} s] {which} rep {rep + 1}", file=sys.stderr)
    finally:
        stop_all_spawned()
    med: Callable[[str, str], float] = lambda which, key: statistics.median(r[key] for r in runs[which])  # noqa: E731
    rows = [
        ("1-byte echo p50 (µs)", "echo_p50_us", "{:.0f}"),
        ("1-byte echo p99 (µs)", "echo_p99_us", "{:.0f}"),
        ("bulk app→device (MB/s)", "up_mbps", "{:.1f}"),
        ("bulk device→app (MB/s)", "down_mbps", "{:.1f}"),
        ("CPU s/MB app→device, all processes", "up_cpu_per_mb", "{:.4f}"),
        ("CPU s/MB device→app, all processes", "down_cpu_per_mb", "{:.4f}"),
    ]
    print(f"\nmedians of {args.reps} alternating runs; {args.echoes} echoes, {args.mib} MiB bulk\n")
    floor = "socat" in runs
    head = "| figure | direct | through the relay | relay minus direct | ratio |"
    print(head + (" direct + socat forwarder | socat minus direct |" if floor else ""))
    print("|---|---|---|---|---|" + ("---|---|" if floor else ""))
    for label, key, fmt in rows:
        d, r = med("direct", key), med("relay", key)
        line = f"| {label} | {fmt.format(d)} | {fmt.format(r)} | {fmt.format(r - d)} | {r / d:.2f}x |"
        if floor:
            f = med("socat", key)
            line += f" {fmt.format(f)} | {fmt.format(f - d)} |"
        print(line)
    for key in ("up", "down"):
        print(f"| the relay's own CPU s/MB ({key}) | | {med('relay', f'{key}_relay_cpu_per_mb'):.4f} | | |")
    added = med("relay", "echo_p50_us") - med("direct", "echo_p50_us")
    up = med("relay", "up_mbps") / med("direct", "up_mbps")
    down = med("relay", "down_mbps") / med("direct", "down_mbps")
    print()
    print(f"{'PASS' if added < 100 else 'FAIL'}: the relay adds {added:.0f} µs to the echo p50 (target < 100 µs)")
    print(f"{'PASS' if min(up, down) >= 0.5 else 'FAIL'}: bulk through the relay {up:.2f}x / {down:.2f}x direct")
    print(f"(target >= 0.5x each way); {time.monotonic() - started:.0f} s")
    if floor:
        hop = med("socat", "echo_p50_us") - med("direct", "echo_p50_us")
        print(f"one copying hop in C (socat) adds {hop:.0f} µs to the same echo p50 on this machine")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
