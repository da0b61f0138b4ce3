"""comtunnel against the tools users would pick instead, in one run, on 127.0.0.1 through real PTYs.

    python benchmarks/run.py [--quick] [--reps 3] [--out benchmarks/results]

Peers (each skipped with a reason if not installed): a direct PTY (no forwarding at all), comtunnel
(hub and client processes, TLS), ser2net raw + socat PTY (the usual Linux recipe), ser2net
telnet(rfc2217) + pyserial's rfc2217:// client, socat OPENSSL <-> socat OPENSSL with PTYs at both
ends (the nearest encrypted peer), and comtunnel's RFC 2217 client role in front of ser2net.
Devices are emulated by benchmarks/device.py in a process of their own.

Every figure is the median of --reps repetitions and is also given as a ratio to the peers measured
in the same run (the machine is noisy; absolute numbers drift). Output: JSON with every sample,
a Markdown table, PNG plots (with matplotlib), and the issue's target table with PASS/FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORD = 16
CLK = os.sysconf("SC_CLK_TCK")


# --- processes ------------------------------------------------------------------------------------


_spawned: list[subprocess.Popen[Any]] = []


def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    """Popen, remembered: whatever a failed peer set-up left running is stopped at the end of the run."""
    proc: subprocess.Popen[Any] = subprocess.Popen(*args, **kwargs)
    _spawned.append(proc)
    return proc


def stop_all_spawned() -> None:
    for proc in _spawned:
        if proc.poll() is None:
            proc.terminate()
    for proc in _spawned:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DeviceProc:
    """benchmarks/device.py: N emulated devices; one JSON command in, one JSON answer out."""

    def __init__(self, count: int) -> None:
        self.proc = spawn(
            [sys.executable, str(HERE / "device.py"), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.paths: list[str] = json.loads(self.proc.stdout.readline())
        self._lock = threading.Lock()

    def send(self, op: str, **kw: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> list[dict[str, float]]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("device process died")
        result: list[dict[str, float]] = json.loads(line)
        return result

    def call(self, op: str, **kw: Any) -> list[dict[str, float]]:
        self.send(op, **kw)
        return self.answer()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def rss_mib(pids: list[int], field: str = "VmRSS") -> list[float]:
    """Each process's resident set (VmRSS now, or VmHWM: its peak), MiB."""
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    out.append(int(line.split()[1]) / 1024)
    return out


def pss_mib(pids: list[int]) -> float:
    """Proportional set size of the processes together (shared pages split between their users), MiB:
    64 socat processes each show 8 MiB of RSS, mostly the same libcrypto pages."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


def limits_short(ports: int) -> str:
    """Why ``ports`` ports cannot be set up on this machine now ("" if they can): PTYs and
    fds. (comtunnel's client watches all its virtual ports with one inotify instance.)"""
    pty_max, pty_nr = (int(Path(f"/proc/sys/kernel/pty/{f}").read_text()) for f in ("max", "nr"))
    if pty_max - pty_nr < 2 * ports + 8:
        return f"{pty_max - pty_nr} PTYs free (/proc/sys/kernel/pty/max {pty_max}), {2 * ports} needed"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8 * ports + 256 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every process started after
        soft = hard
    if soft < 8 * ports + 256:
        return f"RLIMIT_NOFILE is {soft}, about {8 * ports + 256} needed"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_path(path: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear")


# --- the application side --------------------------------------------------------------------------


class PtyApp:
    """An application holding a serial port open: a PTY path, raw."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            select.select([], [self.fd], [], 5)
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(self.fd, view[:65536]) :]

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 1 << 17)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.fd)


class PyserialApp:
    """An application using pyserial's rfc2217:// client (its own threads, its own telnet parser)."""

    def __init__(self, url: str) -> None:
        import serial

        self.port = serial.serial_for_url(url, baudrate=115200, timeout=0)

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            data: bytes = self.port.read(self.port.in_waiting or 1)
            if data or time.monotonic() >= deadline:
                return data
            time.sleep(0.0005)

    def close(self) -> None:
        self.port.close()


@dataclass
class Setup:
    apps: list[Any]
    pids: list[int]
    device: DeviceProc
    stop: Callable[[], None]


# --- peers -------------------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    start: Callable[[int, Path], Setup]
    max_ports: int
    why_not: str = ""
    encrypted: bool = False
    pyserial: bool = False  # the application is pyserial's rfc2217:// client: 1 MiB bulk and 1-byte echo only
    bulk_only: bool = False


def start_direct(ports: int, tmp: Path) -> Setup:
    device = DeviceProc(ports)
    apps = [PtyApp(p) for p in device.paths]
    return Setup(apps, [], device, lambda: None)


def _procs_stop(procs: list[subprocess.Popen[bytes]]) -> Callable[[], None]:
    def stop() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()

    return stop


def certs_dir(tmp: Path) -> Path:
    certs = tmp / "certs"
    if not certs.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "comtunnel",
                "certs",
                "init",
                str(certs),
                "--hub-name",
                "127.0.0.1",
                "--client",
                "bench",
            ],
            check=True,
            capture_output=True,
        )
        for name in ("hub", "bench"):
            (certs / f"{name}.pem").write_bytes(
                (certs / f"{name}.crt").read_bytes() + (certs / f"{name}.key").read_bytes()
            )
    return certs


def start_comtunnel(ports: int, tmp: Path) -> Setup:
    device = DeviceProc(ports)
    return comtunnel_pair(tmp, device, device.paths, settle=0.3 + ports * 0.02)  # channels open after the links


def comtunnel_pair(tmp: Path, device: DeviceProc, sources: list[str], settle: float) -> Setup:
    """A `comtunnel hub` serving ``sources`` as p0, p1, ... and a client linking each to a PTY."""
    certs = certs_dir(tmp)
    log = (tmp / f"comtunnel-{time.monotonic_ns()}.log").open("wb")
    port = free_port()
    hub = spawn(
        [sys.executable, "-m", "comtunnel", "-q", "hub", "--listen", f"127.0.0.1:{port}", "--certs", str(certs),
         "--control-socket", "none", *[f"--port=p{i}={d}" for i, d in enumerate(sources)]],
        stdout=log, stderr=log,
    )  # fmt: skip
    wait_port(port)
    links = tmp / f"links-{time.monotonic_ns()}"
    client = spawn(
        [sys.executable, "-m", "comtunnel", "-q", "client", "--connect", f"127.0.0.1:{port}", "--certs", str(certs),
         "--name", "bench", *[f"--link=p{i}={links / f'p{i}'}" for i in range(len(sources))]],
        stdout=log, stderr=log,
    )  # fmt: skip
    for i in range(len(sources)):
        wait_path(links / f"p{i}")
    time.sleep(settle)
    apps = [PtyApp(str(links / f"p{i}")) for i in range(len(sources))]
    return Setup(apps, [hub.pid, client.pid], device, _procs_stop([client, hub]))


def ser2net_config(tmp: Path, paths: list[str], rfc2217: bool) -> tuple[Path, list[int]]:
    ports = [free_port() for _ in paths]
    accepter = "telnet(rfc2217),tcp" if rfc2217 else "tcp"
    text = "".join(
        f"connection: &c{i}\n  accepter: {accepter},127.0.0.1,{port}\n  connector: serialdev,{path},115200n81,local\n"
        for i, (path, port) in enumerate(zip(paths, ports, strict=True))
    )
    config = tmp / f"ser2net-{time.monotonic_ns()}.yaml"
    config.write_text(text)
    return config, ports


def start_ser2net(config: Path, tmp: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("ser2net") or "/usr/sbin/ser2net"
    log = (tmp / "ser2net.log").open("ab")
    return spawn(
        [binary, "-n", "-u", "-c", str(config), "-P", str(tmp / f"s2n-{config.stem}.pid")], stdout=log, stderr=log
    )


def start_ser2net_socat(ports: int, tmp: Path) -> Setup:
    device = DeviceProc(ports)
    config, tcp = ser2net_config(tmp, device.paths, rfc2217=False)
    procs = [start_ser2net(config, tmp)]
    for port in tcp:
        wait_port(port)
    links = []
    for i, port in enumerate(tcp):
        link = tmp / f"s2n-{time.monotonic_ns()}-{i}"
        procs.append(
            spawn(["socat", f"PTY,link={link},raw,echo=0", f"TCP:127.0.0.1:{port},nodelay"], stderr=subprocess.DEVNULL)
        )
        links.append(link)
    for link in links:
        wait_path(link)
    time.sleep(0.2)
    return Setup([PtyApp(str(link)) for link in links], [p.pid for p in procs], device, _procs_stop(procs))


def start_ser2net_pyserial(ports: int, tmp: Path) -> Setup:
    device = DeviceProc(ports)
    config, tcp = ser2net_config(tmp, device.paths, rfc2217=True)
    proc = start_ser2net(config, tmp)
    for port in tcp:
        wait_port(port)
    # pyserial's client runs inside the application: its CPU is the application's
    apps = [PyserialApp(f"rfc2217://127.0.0.1:{port}?ign_set_control") for port in tcp]
    return Setup(apps, [proc.pid], device, _procs_stop([proc]))


def start_socat_openssl(ports: int, tmp: Path) -> Setup:
    certs = certs_dir(tmp)
    device = DeviceProc(ports)
    procs, links = [], []
    for i, path in enumerate(device.paths):
        port = free_port()
        procs.append(
            spawn(
                ["socat", f"OPENSSL-LISTEN:{port},reuseaddr,bind=127.0.0.1,nodelay,cert={certs / 'hub.pem'},"
                 f"cafile={certs / 'ca.crt'},verify=1", f"FILE:{path},raw,echo=0"],
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        wait_port_listen(port)
        link = tmp / f"ssl-{time.monotonic_ns()}-{i}"
        procs.append(
            spawn(
                ["socat", f"PTY,link={link},raw,echo=0", f"OPENSSL:127.0.0.1:{port},nodelay,cert={certs / 'bench.pem'},"
                 f"cafile={certs / 'ca.crt'},commonname=127.0.0.1"],
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        links.append(link)
    for link in links:
        wait_path(link)
    time.sleep(0.3)
    return Setup([PtyApp(str(link)) for link in links], [p.pid for p in procs], device, _procs_stop(procs))


def wait_port_listen(port: int, timeout: float = 10) -> None:
    """Like wait_port, but without connecting (socat OPENSSL-LISTEN serves one connection only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port:04X} " in Path("/proc/net/tcp").read_text():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_comtunnel_rfc2217(ports: int, tmp: Path) -> Setup:
    """comtunnel's RFC 2217 client role: the hub takes its ports from ser2net telnet(rfc2217)."""
    device = DeviceProc(ports)
    config, tcp = ser2net_config(tmp, device.paths, rfc2217=True)
    s2n = start_ser2net(config, tmp)
    for port in tcp:
        wait_port(port)
    # ser2net acknowledges no DTR/RTS on a PTY: the first open waits out those groups once (1 s)
    setup = comtunnel_pair(tmp, device, [f"rfc2217://127.0.0.1:{t}" for t in tcp], settle=1.5)
    stop = setup.stop

    def stop_all() -> None:
        stop()
        _procs_stop([s2n])()

    return Setup(setup.apps, [*setup.pids, s2n.pid], device, stop_all)


def comtunnel_gateway(tmp: Path, device: DeviceProc, through_tunnel: bool) -> Setup:
    """pyserial's rfc2217:// client against `comtunnel hub --rfc2217`, or against `comtunnel client
    --rfc2217` (through the tunnel: client -> TLS -> hub -> device)."""
    certs = certs_dir(tmp)
    log = (tmp / f"gateway-{time.monotonic_ns()}.log").open("wb")
    gateway, hub_port = free_port(), free_port()
    served = ["--rfc2217", f"d=127.0.0.1:{gateway}"]
    hub = spawn(
        [sys.executable, "-m", "comtunnel", "-q", "hub", "--listen", f"127.0.0.1:{hub_port}", "--certs", str(certs),
         "--control-socket", "none", f"--port=d={device.paths[0]}", *([] if through_tunnel else served)],
        stdout=log, stderr=log,
    )  # fmt: skip
    procs = [hub]
    wait_port(hub_port)
    if through_tunnel:
        procs.insert(0, spawn(
            [sys.executable, "-m", "comtunnel", "-q", "client", "--connect", f"127.0.0.1:{hub_port}",
             "--certs", str(certs), "--name", "bench", *served],
            stdout=log, stderr=log,
        ))  # fmt: skip
    wait_port(gateway)
    time.sleep(0.3)
    apps = [PyserialApp(f"rfc2217://127.0.0.1:{gateway}?ign_set_control")]
    return Setup(apps, [p.pid for p in procs], device, _procs_stop(procs))


def start_hub_rfc2217(ports: int, tmp: Path) -> Setup:
    return comtunnel_gateway(tmp, DeviceProc(1), through_tunnel=False)


def start_client_rfc2217(ports: int, tmp: Path) -> Setup:
    return comtunnel_gateway(tmp, DeviceProc(1), through_tunnel=True)


# --- workloads ---------------------------------------------------------------------------------------


def app_to_device(setup: Setup, size: int, timeout: float = 60) -> dict[str, float]:
    """Unpaced bulk from the application to the device: MB/s, CPU s/MB of the forwarders."""
    app = setup.apps[0]
    data = os.urandom(size)
    cpu0 = cpu_seconds(setup.pids)
    setup.device.send("sink", ports=[0], bytes=size, timeout=timeout)
    start = time.monotonic()
    app.write(data)
    (result,) = setup.device.answer()
    elapsed = max(1e-6, result["last"] - start) if result["bytes"] else timeout
    cpu = cpu_seconds(setup.pids) - cpu0
    return {
        "mbps": result["bytes"] / elapsed / 1e6,
        "cpu_per_mb": cpu / max(1e-9, result["bytes"] / 1e6),
        "complete": float(result["bytes"] >= size),
    }


def device_to_app(setup: Setup, size: int, timeout: float = 60) -> dict[str, float]:
    app = setup.apps[0]
    cpu0 = cpu_seconds(setup.pids)
    setup.device.send("source", ports=[0], bytes=size, rate=0)
    got = 0
    start = time.monotonic()
    deadline = start + timeout
    last = start
    while got < size and time.monotonic() < deadline:
        chunk = app.read(0.5)
        if chunk:
            got += len(chunk)
            last = time.monotonic()
    setup.device.answer()
    cpu = cpu_seconds(setup.pids) - cpu0
    return {
        "mbps": got / max(1e-6, last - start) / 1e6,
        "cpu_per_mb": cpu / max(1e-9, got / 1e6),
        "complete": float(got >= size),
    }


def paced(setup: Setup, ports: int, baud: int, seconds: float) -> dict[str, float]:
    """Every port's device streams at baud/10 bytes/s; the applications read. Lost bytes, delay p50/p99.

    One poll loop reads every port (a thread per port cost more than the forwarders at 128 ports).
    Each read yields one delay: that of the oldest record it completes, the worst byte it brings.
    Also CPU seconds per port-second of the forwarders, and the harness's own CPU (device + reader).
    """
    rate = baud / 10
    size = int(rate * seconds) // RECORD * RECORD
    index = {setup.apps[i].fd: i for i in range(ports)}
    poller = select.poll()
    for fd in index:
        poller.register(fd, select.POLLIN)
    got = [0] * ports
    tails = [b""] * ports
    delays: list[float] = []
    harness = [setup.device.proc.pid]
    cpu0, harness0, own0 = cpu_seconds(setup.pids), cpu_seconds(harness), time.process_time()
    setup.device.send("source", ports=list(range(ports)), bytes=size, rate=rate)
    start = time.monotonic()
    deadline = start + seconds + 10
    left = ports
    while left and time.monotonic() < deadline:
        for fd, _ in poller.poll(500):
            try:
                chunk = os.read(fd, 1 << 17)
            except BlockingIOError:
                continue
            now = time.monotonic_ns()
            i = index[fd]
            got[i] += len(chunk)
            data = tails[i] + chunk
            whole = len(data) // RECORD * RECORD
            if whole:
                delays.append((now - int.from_bytes(data[8:16], "big")) / 1e6)
            tails[i] = data[whole:]
            if got[i] >= size:
                poller.unregister(fd)
                left -= 1
    elapsed = time.monotonic() - start
    setup.device.answer()
    cpu = cpu_seconds(setup.pids) - cpu0
    lost = sum(max(0, size - g) for g in got)
    return {
        "lost": float(lost),
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "mbps": sum(got) / seconds / 1e6,
        "cpu_per_port_s": cpu / (ports * seconds) if setup.pids else float("nan"),
        "harness_cpu": (cpu_seconds(harness) - harness0 + time.process_time() - own0) / elapsed,
    }


def aggregate(setup: Setup, ports: int, size: int) -> dict[str, float]:
    """All ports at once, unpaced, device to application: aggregate MB/s."""
    got = [0] * ports
    stamps: list[float] = []

    def reader(i: int) -> None:
        deadline = time.monotonic() + 60
        while got[i] < size and time.monotonic() < deadline:
            chunk = setup.apps[i].read(0.5)
            got[i] += len(chunk)
        stamps.append(time.monotonic())

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(ports)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    setup.device.call("source", ports=list(range(ports)), bytes=size, rate=0)
    for thread in threads:
        thread.join(70)
    return {"mbps": sum(got) / max(1e-6, max(stamps) - start) / 1e6}


def echo(setup: Setup, size: int, count: int, port: int = 0) -> list[float]:
    """Round trips of ``size`` bytes through the device's echo, in microseconds."""
    app = setup.apps[port]
    setup.device.send("echo", ports=[port])
    time.sleep(0.05)
    payload = bytes(range(size))
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        app.write(payload)
        got = 0
        deadline = start + 2
        while got < size and time.perf_counter() < deadline:
            got += len(app.read(1.0))
        samples.append((time.perf_counter() - start) * 1e6)
    setup.device.call("stop")
    return samples


def fairness(setup: Setup, count: int, rate: float = 0) -> list[float]:
    """1-byte echo on port 1 while port 0's device floods its application (unpaced, or at ``rate`` B/s)."""
    flood_size = 512 << 20
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            setup.apps[0].read(0.1)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    setup.device.send("source", ports=[0], bytes=flood_size, rate=rate, background=True)
    setup.device.send("echo", ports=[1])
    time.sleep(0.3)
    app = setup.apps[1]
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        app.write(b"!")
        got = 0
        while got < 1 and time.perf_counter() - start < 2:
            got += len(app.read(1.0))
        samples.append((time.perf_counter() - start) * 1e6)
    setup.device.call("stop")
    stop.set()
    thread.join(2)
    return samples


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class Results:
    samples: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, peer: str, metric: str, value: Any) -> None:
        self.samples.setdefault(peer, {}).setdefault(metric, []).append(value)

    def median(self, peer: str, metric: str) -> float:
        values = [v for v in self.samples.get(peer, {}).get(metric, []) if isinstance(v, int | float)]
        return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def running(peer: Peer, ports: int, tmp: Path) -> Iterator[Setup]:
    setup = peer.start(ports, tmp)
    try:
        yield setup
    finally:
        for app in setup.apps:
            with contextlib.suppress(Exception):
                app.close()
        setup.stop()
        setup.device.close()


def available(peers: list[Peer]) -> list[Peer]:
    out = []
    for peer in peers:
        if "socat" in peer.name and not shutil.which("socat"):
            peer.why_not = "socat not installed"
        elif "ser2net" in peer.name and not (shutil.which("ser2net") or Path("/usr/sbin/ser2net").exists()):
            peer.why_not = "ser2net not installed"
        out.append(peer)
    return out


SCALING = [1, 8, 32, 128]  # ports of the scaling workload, each at SCALING_BAUDS
SCALING_BAUDS = [115200, 921600]


@dataclass
class Plan:
    """How much of each workload one run does (--quick does less)."""

    reps: int
    bulk: int
    paced_seconds: float
    echoes: int
    bauds: list[int]  # for 1 and 8 ports; more ports get SCALING_BAUDS only
    port_counts: list[int]


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="comtunnel-bench-"))
    plan = Plan(
        reps=args.reps,
        bulk=(4 if args.quick else 16) << 20,
        paced_seconds=1.0 if args.quick else 2.0,
        echoes=200 if args.quick else 1000,
        bauds=[115200, 921600, 12_000_000] if args.quick else [115200, 921600, 3_000_000, 12_000_000],
        port_counts=[1, 8, 32] if args.quick else SCALING,
    )
    peers = available(
        [
            Peer("direct PTY", start_direct, 128),
            Peer("comtunnel", start_comtunnel, 128, encrypted=True),
            Peer("ser2net raw + socat", start_ser2net_socat, 8),
            Peer("socat OPENSSL", start_socat_openssl, 128, encrypted=True),  # a process pair per port
            Peer("ser2net rfc2217 + pyserial", start_ser2net_pyserial, 1, pyserial=True),
            Peer("comtunnel hub rfc2217 + pyserial", start_hub_rfc2217, 1, pyserial=True),
            Peer("comtunnel client rfc2217 + pyserial", start_client_rfc2217, 1, encrypted=True, pyserial=True),
            Peer("comtunnel rfc2217 client <- ser2net", start_comtunnel_rfc2217, 1, encrypted=True, bulk_only=True),
        ]
    )
    res = Results()
    started = time.monotonic()
    for peer in peers:
        if peer.why_not:
            res.skipped[peer.name] = peer.why_not
    # Repetitions go round the peers, in alternating order, so that a noisy minute on this shared
    # host lands on every peer a little instead of on one peer's whole block of figures.
    runnable = [peer for peer in peers if not peer.why_not]
    one = dataclasses.replace(plan, reps=1, echoes=max(1, plan.echoes // plan.reps))
    for rep in range(plan.reps):
        for peer in runnable if rep % 2 == 0 else runnable[::-1]:
            if peer.name in res.skipped:
                continue
            elapsed = time.monotonic() - started
            print(f"[{elapsed:5.0f} s] {peer.name}, repetition {rep + 1}", file=sys.stderr, flush=True)
            try:
                run_peer(peer, res, tmp, one, scaling=rep == 0)
            except Exception as exc:  # one peer failing must not end the run
                res.skipped[peer.name] = f"failed: {type(exc).__name__}: {exc}"
                print(f"  skipped: {exc}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"results": res, "seconds": time.monotonic() - started, "plan": plan}


def bauds_for(plan: Plan, ports: int) -> list[int]:
    return plan.bauds if ports <= 8 else SCALING_BAUDS


def run_peer(peer: Peer, res: Results, tmp: Path, plan: Plan, *, scaling: bool = True) -> None:
    """``plan.reps`` repetitions of every figure for ``peer``; 32 ports and more only with ``scaling``
    (once per run: each takes long, and those figures are measured once)."""
    small = peer.pyserial or peer.bulk_only  # pyserial's client: ~0.3 MB/s, keep its share of the time small
    size = (1 << 20) if small else plan.bulk
    with running(peer, 1 if small else 2, tmp) as setup:
        for _ in range(plan.reps):
            up = app_to_device(setup, size, timeout=30)
            down = device_to_app(setup, size, timeout=30)
            res.add(peer.name, "app_to_device_mbps", up["mbps"])
            res.add(peer.name, "device_to_app_mbps", down["mbps"])
            if setup.pids:
                res.add(peer.name, "cpu_s_per_mb", (up["cpu_per_mb"] + down["cpu_per_mb"]) / 2)
        if peer.bulk_only:
            return
        for _ in range(plan.reps):
            for size_, name in ((1, "echo1"), (64, "echo64")):
                if peer.pyserial and size_ > 1:
                    continue
                samples = echo(setup, size_, plan.echoes // plan.reps // (5 if peer.pyserial else 1))
                res.add(peer.name, f"{name}_p50_us", percentile(samples, 50))
                res.add(peer.name, f"{name}_p99_us", percentile(samples, 99))
                res.add(peer.name, f"{name}_max_us", max(samples))
                res.add(peer.name, f"{name}_samples", samples)
        if setup.pids:
            res.add(peer.name, "peak_rss_mib", peak_rss_mib(setup.pids))
    if peer.pyserial:
        return
    for ports in plan.port_counts:
        if ports > peer.max_ports or (ports >= 32 and not scaling):
            continue
        why = limits_short(ports)
        if why:
            res.skipped[f"{peer.name}, {ports} ports"] = why
            print(f"  {ports} ports skipped: {why}", file=sys.stderr)
            continue
        with running(peer, ports, tmp) as setup:
            if ports == 8:
                for _ in range(plan.reps):
                    res.add(peer.name, "aggregate8_mbps", aggregate(setup, 8, plan.bulk // 4)["mbps"])
            for baud in bauds_for(plan, ports):
                for _ in range(plan.reps if ports < 32 else 1):
                    result = paced(setup, ports, baud, plan.paced_seconds)
                    for key, value in result.items():
                        res.add(peer.name, f"paced_{ports}x{baud}_{key}", value)
            if setup.pids:
                now = rss_mib(setup.pids)
                res.add(peer.name, f"rss{ports}_procs_mib", now)
                res.add(peer.name, f"rss{ports}_total_mib", sum(now))
                res.add(peer.name, f"pss{ports}_mib", pss_mib(setup.pids))
                res.add(peer.name, f"peak{ports}_mib", sum(rss_mib(setup.pids, "VmHWM")))
            if ports == 8 and peer.name != "direct PTY":
                samples = fairness(setup, 300)
                res.add(peer.name, "fairness_p99_us", percentile(samples, 99))
                samples = fairness(setup, 300, rate=1.2e6)  # the flood of a 12 Mbaud line
                res.add(peer.name, "fairness12M_p99_us", percentile(samples, 99))


# --- report ---------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


@dataclass
class Target:
    text: str
    ours: str  # comtunnel's figure
    theirs: str  # the reference's figure, same run ("" for an absolute target)
    ratio: float  # ours / theirs (nan for an absolute target)
    holds: bool


def targets(res: Results) -> list[Target]:
    """Issue 12's targets: comtunnel against socat OPENSSL unless said, each a same-run ratio."""
    c, s, d = "comtunnel", "socat OPENSSL", "direct PTY"
    m = res.median
    rows: list[Target] = []

    def versus(text: str, key: str, peer: str, limit: float, most: bool, unit: str, ours: str = c) -> None:
        """ours/peer <= limit (most) or >= limit: the ratio decides; nan (not measured) fails."""
        a, b = m(ours, key), m(peer, key)
        r = ratio(a, b)
        rows.append(Target(text, f"{a:.4g} {unit}", f"{b:.4g} {unit}", r, r <= limit if most else r >= limit))

    def below(text: str, value: float, limit: float, unit: str) -> None:
        rows.append(Target(text, f"{value:.4g} {unit}", "", float("nan"), value < limit))

    for size in (1, 64):
        for pct in (50, 99):
            versus(f"{size}-byte echo p{pct} <= 1.0x socat OPENSSL", f"echo{size}_p{pct}_us", s, 1.0, True, "us")
    versus("bulk app->device >= 1.0x socat OPENSSL", "app_to_device_mbps", s, 1.0, False, "MB/s")
    versus("bulk device->app >= 1.0x socat OPENSSL", "device_to_app_mbps", s, 1.0, False, "MB/s")
    below("quiet port echo p99, another port floods unpaced: < 2 ms", m(c, "fairness_p99_us"), 2000, "us")
    versus("quiet port echo p99, another port floods unpaced: <= 1.5x socat", "fairness_p99_us", s, 1.5, True, "us")
    below("quiet port echo p99, another port floods at 12 Mbaud: < 1 ms", m(c, "fairness12M_p99_us"), 1000, "us")
    versus(
        "quiet port echo p99, another port floods at 12 Mbaud: <= 1.5x socat", "fairness12M_p99_us", s, 1.5, True, "us"
    )
    versus("32 ports x 115200 paced delay p99 <= 2x direct PTY", "paced_32x115200_p99_ms", d, 2.0, True, "ms")
    lost = m(c, "paced_32x115200_lost")
    rows[-1].holds = rows[-1].holds and lost == 0
    rows[-1].ours += f", {lost:.0f} B lost"
    versus("8 ports x 12 Mbaud paced delay p99 <= 1.0x socat OPENSSL", "paced_8x12000000_p99_ms", s, 1.0, True, "ms")
    lost = m(c, "paced_8x12000000_lost")
    rows[-1].holds = rows[-1].holds and lost == 0
    rows[-1].ours += f", {lost:.0f} B lost"
    versus("CPU s per MB, hub + client <= 1.0x socat OPENSSL", "cpu_s_per_mb", s, 1.0, True, "s/MB")
    below("peak RSS with 32 ports open, hub + client <= 64 MiB", m(c, "peak32_mib"), 64.001, "MiB")
    hub, ser2net = "comtunnel hub rfc2217 + pyserial", "ser2net rfc2217 + pyserial"
    for way, label in (("app_to_device", "app->device"), ("device_to_app", "device->app")):
        versus(f"hub --rfc2217 + pyserial >= 1.5x ser2net rfc2217 + pyserial, {label}", f"{way}_mbps", ser2net, 1.5,
               False, "MB/s", ours=hub)  # fmt: skip
    versus("RFC 2217 client role <- ser2net >= 10x pyserial's client <- ser2net, device->app", "device_to_app_mbps",
           ser2net, 10.0, False, "MB/s", ours="comtunnel rfc2217 client <- ser2net")  # fmt: skip
    tunnel = "comtunnel client rfc2217 + pyserial"
    versus("1-byte echo p50, pyserial -> client --rfc2217 (tunnel) < ser2net rfc2217", "echo1_p50_us", ser2net, 1.0,
           True, "us", ours=tunnel)  # fmt: skip
    rows[-1].holds = rows[-1].ratio < 1.0
    return rows


def target_table(res: Results) -> list[str]:
    lines = ["| target | comtunnel | reference | ratio | holds |", "|---|---|---|---|---|"]
    for t in targets(res):
        r = f"{t.ratio:.2f}x" if t.ratio == t.ratio else "-"
        lines.append(f"| {t.text} | {t.ours} | {t.theirs or '-'} | {r} | {'PASS' if t.holds else 'FAIL'} |")
    return lines


METRICS = [
    ("app_to_device_mbps", "bulk app->dev MB/s", "{:.1f}"),
    ("device_to_app_mbps", "bulk dev->app MB/s", "{:.1f}"),
    ("aggregate8_mbps", "8 ports dev->app MB/s", "{:.1f}"),
    ("echo1_p50_us", "1 B echo p50 us", "{:.0f}"),
    ("echo1_p99_us", "1 B echo p99 us", "{:.0f}"),
    ("echo1_max_us", "1 B echo max us", "{:.0f}"),
    ("echo64_p50_us", "64 B echo p50 us", "{:.0f}"),
    ("echo64_p99_us", "64 B echo p99 us", "{:.0f}"),
    ("cpu_s_per_mb", "CPU s/MB", "{:.4f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
    ("fairness_p99_us", "quiet echo p99 (unpaced flood) us", "{:.0f}"),
    ("fairness12M_p99_us", "quiet echo p99 (12 Mbaud flood) us", "{:.0f}"),
]


def scaling_table(data: dict[str, Any]) -> list[str]:
    """Paced streams per peer, ports and baud: loss, delay, the forwarders' CPU and memory."""
    res: Results = data["results"]
    plan: Plan = data["plan"]
    lines = [
        "Paced device streams, every port at baud/10 B/s. CPU = forwarder CPU seconds per port-second; harness ="
        " the emulator's and reader's CPU (cores); memory with that many ports open, MiB: PSS of all the forwarder's"
        " processes / RSS of each (hub, client) / PSS per port.",
        "",
        "| peer | ports x baud | lost B | p50 ms | p99 ms | CPU s/port-s | harness | PSS / RSS each / PSS per port |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for peer in res.samples:
        for ports in plan.port_counts:
            procs = res.samples[peer].get(f"rss{ports}_procs_mib", [[]])[-1]
            pss = res.median(peer, f"pss{ports}_mib")
            each = ", ".join(f"{v:.1f}" for v in procs[:2]) + (f" ... ({len(procs)})" if len(procs) > 2 else "")
            rss = f"{pss:.1f} / {each} / {pss / ports:.2f}" if procs else "-"
            for baud in bauds_for(plan, ports):
                key = f"paced_{ports}x{baud}"
                lost = res.median(peer, f"{key}_lost")
                if lost != lost:
                    continue
                p50, p99 = res.median(peer, f"{key}_p50_ms"), res.median(peer, f"{key}_p99_ms")
                cpu, harness = res.median(peer, f"{key}_cpu_per_port_s"), res.median(peer, f"{key}_harness_cpu")
                cpu_cell = f"{cpu:.4f}" if cpu == cpu else "-"
                cells = f"{lost:.0f} | {p50:.2f} | {p99:.2f} | {cpu_cell} | {harness:.2f} | {rss}"
                lines.append(f"| {peer} | {ports} x {baud} | {cells} |")
    return lines


def markdown(data: dict[str, Any]) -> str:
    res: Results = data["results"]
    peers = list(res.samples)
    lines = [f"Medians of repetitions; ratio = comtunnel / peer. Run took {data['seconds']:.0f} s.", ""]
    lines.append("| metric | " + " | ".join(peers) + " |")
    lines.append("|---|" + "---|" * len(peers))
    for key, label, fmt in METRICS:
        cells = []
        for peer in peers:
            value = res.median(peer, key)
            cell = fmt.format(value) if value == value else "-"
            base = res.median("comtunnel", key)
            if peer != "comtunnel" and value == value and base == base and value:
                cell += f" ({base / value:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(scaling_table(data))
    if res.skipped:
        lines.append("")
        lines.extend(f"- skipped {peer}: {why}" for peer, why in res.skipped.items())
    lines.append("")
    lines.extend(target_table(res))
    return "\n".join(lines)


def plots(data: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    res: Results = data["results"]
    plan: Plan = data["plan"]
    written = []
    fig, axes = plt.subplots(1, len(plan.port_counts), figsize=(5 * len(plan.port_counts), 4), squeeze=False)
    for ax, ports in zip(axes[0], plan.port_counts, strict=True):
        bauds = bauds_for(plan, ports)
        for peer in res.samples:
            xs, ys = [], []
            for baud in bauds:
                value = res.median(peer, f"paced_{ports}x{baud}_mbps")
                if value == value:
                    xs.append(baud)
                    ys.append(value)
            if xs:
                ax.plot(xs, ys, marker="o", label=peer)
        ax.plot(bauds, [b / 10 * ports / 1e6 for b in bauds], "k:", label="offered")
        ax.set_xscale("log")
        ax.set_title(f"{ports} port(s), paced")
        ax.set_xlabel("baud")
        ax.set_ylabel("delivered MB/s")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=100)
    written.append(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for peer, metrics in res.samples.items():
        samples = [s for rep in metrics.get("echo1_samples", []) for s in rep]
        if samples:
            ordered = sorted(samples)
            ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=peer)
    ax.set_xscale("log")
    ax.set_xlabel("1-byte echo round trip (us)")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "echo_cdf.png"
    fig.savefig(path, dpi=100)
    written.append(path)
    fig, (cpu_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for number, peer in enumerate(res.samples):
        for baud, style in zip(SCALING_BAUDS, ("-", "--"), strict=True):
            keys = [(n, f"paced_{n}x{baud}") for n in plan.port_counts]
            points = [(n, res.median(peer, f"{k}_cpu_per_port_s"), res.median(peer, f"{k}_p99_ms")) for n, k in keys]
            points = [p for p in points if p[2] == p[2]]
            if not points:
                continue
            look = {"marker": "o", "linestyle": style, "color": f"C{number}", "label": f"{peer}, {baud}"}
            if peer != "direct PTY":  # no forwarder, no CPU
                cpu_ax.plot([p[0] for p in points], [p[1] for p in points], **look)
            p99_ax.plot([p[0] for p in points], [p[2] for p in points], **look)
    for ax, ylabel in ((cpu_ax, "forwarder CPU s per port-second"), (p99_ax, "delay p99 (ms)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ports (paced at baud/10 B/s each)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "scaling.png"
    fig.savefig(path, dpi=100)
    written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ~3-minute subset (fewer bytes, up to 32 ports)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per figure (default 3)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="where JSON, Markdown, PNGs go")
    args = parser.parse_args()
    try:
        data = run(args)
    finally:
        stop_all_spawned()
    args.out.mkdir(parents=True, exist_ok=True)
    res: Results = data["results"]
    rows = [vars(t) for t in targets(res)]
    (args.out / "results.json").write_text(
        json.dumps(
            {"seconds": data["seconds"], "samples": res.samples, "skipped": res.skipped, "targets": rows},
            indent=1,
            default=str,
        )
    )
    text = markdown(data)
    (args.out / "results.md").write_text(text + "\n")
    written = plots(data, args.out)
    print(text)
    print(f"\nwritten: {args.out / 'results.json'}, {args.out / 'results.md'}" + "".join(f", {p}" for p in written))


if __name__ == "__main__":
    main()
