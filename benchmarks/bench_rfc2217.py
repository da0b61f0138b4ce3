"""RFC 2217 speed targets with pyserial's rfc2217:// client, in one run, as same-run ratios.

Real peers on 127.0.0.1; the device is benchmarks/device.py (a PTY in a process of its own). Setups:
  * ser2net telnet(rfc2217) on the device, and `comtunnel hub --rfc2217` on it, each with pyserial's
    client as the application: app -> device and device -> app throughput, 1-byte echo;
  * `comtunnel client --rfc2217` (the client-side gateway, through the TLS tunnel to a hub): 1-byte echo;
  * comtunnel's client role: a hub taking the port from ser2net (`--port d=rfc2217://...`) served on
    `--raw` to a plain TCP reader: device -> app throughput.
Targets (issue 12, point 5), each a ratio to the ser2net + pyserial figures of the same run:
  a. hub --rfc2217 >= 1.5x ser2net, each way;  b. client role device -> app >= 10x pyserial on ser2net;
  c. 1-byte echo p50 through client --rfc2217 < ser2net's.

    python benchmarks/bench_rfc2217.py [--reps 3] [--kib 512] [--echoes 300] [--json out.json]
    python benchmarks/bench_rfc2217.py --servers [--mib 8] [--seconds 2]

--servers runs the older comparison instead: comtunnel's own RFC 2217 client codec against
comtunnel's servers, ser2net and pyserial's PortManager (unpaced and paced throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from comtunnel.protocol import rfc2217 as r

HERE = Path(__file__).resolve().parent


class Device:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with suppress(OSError):
                os.close(fd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            time.sleep(0.3)
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not come up:\n{log.read_text()}")


@contextmanager
def server(kind: str, device: Device, tmp: Path) -> Iterator[int]:
    """Start one RFC 2217 server in front of `device`; yield its TCP port."""
    port = free_port()
    log = tmp / f"{kind}.log"
    cli = [sys.executable, "-m", "comtunnel"]
    procs: list[subprocess.Popen[bytes]] = []
    out = log.open("wb")
    if kind == "ser2net":
        config = tmp / "ser2net.yaml"
        config.write_text(
            f"connection: &d\n  accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
            f"  connector: serialdev,{device.path},115200n81,local\n"
        )
        binary = shutil.which("ser2net") or "/usr/sbin/ser2net"
        procs.append(
            subprocess.Popen(
                [binary, "-n", "-u", "-c", str(config), "-P", str(tmp / "s2n.pid")], stdout=out, stderr=out
            )
        )
    elif kind == "pyserial":
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "pyserial_rfc2217_server.py"), device.path, str(port)],
                stdout=out,
                stderr=out,
            )
        )
    else:
        certs = tmp / "certs"
        if not certs.exists():
            subprocess.run(
                [*cli, "certs", "init", str(certs), "--hub-name", "127.0.0.1", "--client", "b"],
                check=True,
                capture_output=True,
            )
        if kind == "comtunnel hub":
            procs.append(
                subprocess.Popen(
                    [
                        *cli,
                        "-q",
                        "hub",
                        "--listen",
                        "127.0.0.1:0",
                        "--certs",
                        str(certs),
                        "--port",
                        f"d={device.path}",
                        "--rfc2217",
                        f"d=127.0.0.1:{port}",
                    ],
                    stdout=out,
                    stderr=out,
                )
            )
        else:  # through the tunnel: client --rfc2217 -> TLS -> hub -> device
            hub_port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        *cli,
                        "-q",
                        "hub",
                        "--listen",
                        f"127.0.0.1:{hub_port}",
                        "--certs",
                        str(certs),
                        "--port",
                        f"d={device.path}",
                    ],
                    stdout=out,
                    stderr=out,
                )
            )
            wait_port(hub_port, procs[0], log)
            procs.append(
                subprocess.Popen(
                    [
                        *cli,
                        "-q",
                        "client",
                        "--connect",
                        f"127.0.0.1:{hub_port}",
                        "--certs",
                        str(certs),
                        "--name",
                        "b",
                        "--rfc2217",
                        f"d=127.0.0.1:{port}",
                    ],
                    stdout=out,
                    stderr=out,
                )
            )
    try:
        wait_port(port, procs[-1], log)
        yield port
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT if kind.startswith("comtunnel") else signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        out.close()


class Client:
    """comtunnel's RFC 2217 client codec over an asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.codec = r.Rfc2217Client()
        self.received = 0
        self.first: float | None = None
        self.last = 0.0

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(reader, writer)
        client.codec.start()
        client.codec.set_baudrate(115200)
        client.flush()
        return client

    def flush(self) -> None:
        data = self.codec.data_to_send()
        if data:
            self.writer.write(data)

    async def pump(self) -> None:
        while True:
            chunk = await self.reader.read(1 << 18)
            if not chunk:
                return
            for event in self.codec.receive_data(chunk):
                if isinstance(event, r.SerialDataReceived):
                    now = time.perf_counter()
                    self.first = self.first or now
                    self.last = now
                    self.received += len(event.data)
            self.flush()

    async def send(self, data: bytes) -> None:
        for i in range(0, len(data), 65536):
            self.codec.send_data(data[i : i + 65536])
            self.flush()
            await self.writer.drain()


def drain_device(device: Device, size: int, done: threading.Event, box: list[float]) -> None:

    got = 0
    start = None
    while got < size:
        ready, _, _ = select.select([device.master], [], [], 10)
        if not ready:
            break
        got += len(os.read(device.master, 1 << 17))
        start = start or time.perf_counter()
    box.extend([start or 0.0, time.perf_counter(), got])
    done.set()


def feed_device(device: Device, size: int, rate: float | None) -> None:
    block = os.urandom(4096)
    sent = 0
    start = time.perf_counter()
    while sent < size:
        if rate:
            due = start + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        try:
            sent += os.write(device.master, block[: min(len(block), size - sent)])
        except BlockingIOError:
            time.sleep(0.0005)


async def measure(port: int, device: Device, mib: int, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    size = mib << 20
    client = await Client.connect(port)
    pump = asyncio.ensure_future(client.pump())
    await asyncio.sleep(0.5)  # negotiation; settings applied
    # client -> device, unpaced
    done, box = threading.Event(), []  # type: ignore[var-annotated]
    threading.Thread(target=drain_device, args=(device, size, done, box), daemon=True).start()
    t0 = time.perf_counter()
    await client.send(os.urandom(size))
    await asyncio.to_thread(done.wait, 60)
    out["client_to_device_MBps"] = box[2] / (box[1] - t0) / 1e6
    # device -> client: unpaced, then paced
    for label, rate in (("unpaced", None), ("921600", 92160.0), ("3000000", 300000.0)):
        amount = size if rate is None else int(rate * seconds)
        client.received, client.first = 0, None
        t0 = time.perf_counter()
        await asyncio.to_thread(feed_device, device, amount, rate)
        deadline = time.monotonic() + 20
        while client.received < amount and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        elapsed = max(client.last - t0, 1e-9)
        key = "device_to_client_MBps" if rate is None else f"paced_{label}_MBps"
        out[key] = client.received / elapsed / 1e6
        if rate is not None:
            out[f"paced_{label}_lost_bytes"] = amount - client.received
    pump.cancel()
    client.writer.close()
    return out


# --- the targets, with pyserial's client -----------------------------------------------------------------

SER2NET = shutil.which("ser2net") or "/usr/sbin/ser2net"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: ser2net leaves DTR/RTS on a PTY unanswered; pyserial's open() fails without this. The same URL for all.
PYSERIAL_URL = "rfc2217://127.0.0.1:{}?ign_set_control"


class DeviceProc:
    """benchmarks/device.py with one port: one JSON command in, one JSON answer out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "device.py"), "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.path: str = json.loads(self.proc.stdout.readline())[0]

    def send(self, op: str, **kw: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "ports": [0], **kw}) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, float]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("device process died")
        result: list[dict[str, float]] = json.loads(line)
        return result[0] if result else {}

    def close(self) -> None:
        with suppress(OSError, ValueError):
            self.send("quit")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    """Wait until something listens on ``port``, without connecting (a connection would open the device)."""
    needle = f":{port:04X} 00000000:0000 0A"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in Path("/proc/net/tcp").read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}:\n{log.read_text(errors='replace')}")


class Setup:
    """Processes started for one measurement, stopped (by PID) at the end, their output in one log."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.tmp = tmp
        self.log = tmp / f"{name}.log"
        self._out = self.log.open("wb")
        self.procs: list[subprocess.Popen[bytes]] = []
        # a runtime dir of our own: the client's control socket must not meet another process's
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp / "run")}
        (tmp / "run").mkdir(mode=0o700, exist_ok=True)

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=self._out, stderr=self._out, env=self.env)
        self.procs.append(proc)
        return proc

    def comtunnel(self, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(sys.executable, "-m", "comtunnel", *args)

    def ser2net(self, device: str) -> int:
        port = free_port()
        config = self.tmp / f"ser2net-{port}.yaml"
        config.write_text(
            f"connection: &d\n  accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
            f"  connector: serialdev,{device},115200n81,local\n"
        )
        proc = self.spawn(SER2NET, "-n", "-u", "-c", str(config), "-P", str(self.tmp / f"ser2net-{port}.pid"))
        listening(port, proc, self.log)
        return port

    def certs(self) -> Path:
        certs = self.tmp / "certs"
        if not certs.exists():
            subprocess.run(
                [sys.executable, "-m", "comtunnel", "certs", "init", str(certs), "--hub-name", "127.0.0.1",
                 "--client", "b"],
                check=True, capture_output=True,
            )  # fmt: skip
        return certs

    def wait_log(self, pattern: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log.read_text(errors="replace")):
                return
            time.sleep(0.02)
        raise RuntimeError(f"{pattern!r} not seen:\n{self.log.read_text(errors='replace')}")

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of this setup (the servers; not the application)."""
        total = 0
        for proc in self.procs:
            with suppress(OSError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc.args[0] == sys.executable else signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._out.close()


def start_ser2net(setup: Setup, device: DeviceProc) -> int:
    return setup.ser2net(device.path)


def start_hub_gateway(setup: Setup, device: DeviceProc) -> int:
    port = free_port()
    proc = setup.comtunnel(
        "-q", "hub", "--listen", "127.0.0.1:0", "--certs", str(setup.certs()), "--control-socket", "none",
        "--port", f"d={device.path}", "--rfc2217", f"d=127.0.0.1:{port}",
    )  # fmt: skip
    listening(port, proc, setup.log)
    return port


def start_client_gateway(setup: Setup, device: DeviceProc) -> int:
    hub_port, port = free_port(), free_port()
    certs = str(setup.certs())
    hub = setup.comtunnel(
        "-q", "hub", "--listen", f"127.0.0.1:{hub_port}", "--certs", certs, "--control-socket", "none",
        "--port", f"d={device.path}",
    )  # fmt: skip
    listening(hub_port, hub, setup.log)
    client = setup.comtunnel(
        "-q", "client", "--connect", f"127.0.0.1:{hub_port}", "--certs", certs, "--name", "b",
        "--rfc2217", f"d=127.0.0.1:{port}",
    )  # fmt: skip
    listening(port, client, setup.log)
    return port


def start_client_role(setup: Setup, device: DeviceProc) -> int:
    """ser2net on the device; a hub takes the port from it (Rfc2217RemotePort) and serves it raw."""
    s2n = setup.ser2net(device.path)
    port = free_port()
    hub = setup.comtunnel(
        "hub", "--listen", "127.0.0.1:0", "--certs", str(setup.certs()), "--control-socket", "none",
        "--port", f"d=rfc2217://127.0.0.1:{s2n}", "--raw", f"d=127.0.0.1:{port}",
    )  # fmt: skip
    listening(port, hub, setup.log)
    return port


def start_client_role_tunnel(setup: Setup, device: DeviceProc) -> int:
    """The same client role, the way it is used: the hub's port reaches a client's virtual PTY through
    the TLS tunnel. Returns 0: the application opens the link (see :class:`PtyApp`)."""
    s2n = setup.ser2net(device.path)
    hub_port, certs = free_port(), str(setup.certs())
    hub = setup.comtunnel(
        "hub", "--listen", f"127.0.0.1:{hub_port}", "--certs", certs, "--control-socket", "none",
        "--port", f"d=rfc2217://127.0.0.1:{s2n}",
    )  # fmt: skip
    listening(hub_port, hub, setup.log)
    setup.comtunnel(
        "client", "--connect", f"127.0.0.1:{hub_port}", "--certs", certs, "--name", "b",
        "--link", f"d={setup.tmp / 'link-d'}",
    )  # fmt: skip
    return 0


class PyserialApp:
    """An application on pyserial's rfc2217:// client: blocking reads of what is there (at least a byte)."""

    def __init__(self, port: int) -> None:
        import serial

        self.port = serial.serial_for_url(PYSERIAL_URL.format(port), baudrate=115200, timeout=2)

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read(self) -> bytes:
        data: bytes = self.port.read(self.port.in_waiting or 1)
        return data

    def close(self) -> None:
        self.port.close()


class RawApp:
    """An application on a plain TCP connection (the hub's --raw gateway)."""

    def __init__(self, port: int, setup: Setup) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.settimeout(2)
        setup.wait_log(r"d: \S+ has rfc2217://")  # the device is open, its settings acknowledged

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> bytes:
        try:
            return self.sock.recv(1 << 16)
        except TimeoutError:
            return b""

    def close(self) -> None:
        self.sock.close()


class PtyApp:
    """An application on a client's virtual port (a PTY link), raw, once the client has seen it open."""

    def __init__(self, setup: Setup) -> None:
        link = setup.tmp / "link-d"
        deadline = time.monotonic() + 15
        while not link.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{link} did not appear:\n{setup.log.read_text(errors='replace')}")
            time.sleep(0.05)
        self.fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        setup.wait_log(r"d: application opened the port")
        setup.wait_log(r"opened d \(rfc2217://")

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            select.select([], [self.fd], [], 5)
            with suppress(BlockingIOError):
                view = view[os.write(self.fd, view) :]

    def read(self) -> bytes:
        if not select.select([self.fd], [], [], 2)[0]:
            return b""
        try:
            return os.read(self.fd, 1 << 17)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.fd)


App = PyserialApp | RawApp | PtyApp


def app_to_device(app: App, device: DeviceProc, size: int) -> float:
    """MB/s from the application's first write to the device's last read."""
    data = os.urandom(size)
    device.send("sink", bytes=size, timeout=60)
    start = time.monotonic()  # CLOCK_MONOTONIC, as the device's stamps
    app.write(data)
    got = device.answer()
    if got["bytes"] != size:
        raise RuntimeError(f"the device got {got['bytes']:.0f} of {size} bytes")
    return size / (got["last"] - start) / 1e6


def device_to_app(app: App, device: DeviceProc, size: int) -> float:
    """MB/s from the device's first write (unpaced, as fast as the chain takes it) to the app's last read."""
    device.send("source", bytes=size, rate=0)
    start = time.monotonic()
    got = 0
    while got < size:
        data = app.read()
        if not data:
            raise RuntimeError(f"the application got {got} of {size} bytes")
        got += len(data)
    elapsed = time.monotonic() - start
    device.answer()
    return size / elapsed / 1e6


def echo(app: App, device: DeviceProc, count: int) -> list[float]:
    """Round trips of one byte (values 0x00, 0xFF, CR, LF among them), in ms."""
    device.send("echo")
    samples = []
    try:
        for i in range(count):
            byte = bytes(((0x00, 0xFF, 0x0D, 0x0A, 0x55)[i % 5],))
            start = time.perf_counter()
            app.write(byte)
            got = app.read()
            samples.append((time.perf_counter() - start) * 1e3)
            if got != byte:
                raise RuntimeError(f"echo {i}: sent {byte!r}, got {got!r}")
    finally:
        device.send("stop")
        device.answer()
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def start_no_device(setup: Setup, device: DeviceProc) -> int:
    port = free_port()
    proc = setup.spawn(sys.executable, str(Path(__file__).resolve()), "--no-device-server", str(port))
    listening(port, proc, setup.log)
    return port


def no_device_server(port: int) -> None:
    """An RFC 2217 server with nothing behind it: each request is acknowledged with its own value,
    the data line ``send N`` is answered with N bytes in one write, and other data is echoed. What
    pyserial's client gets from it is that client's own ceiling (throughput) and floor (echo)."""
    from comtunnel.protocol.settings import Parity, StopBits

    class Session(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport, self.codec, self.line = transport, r.Rfc2217Server(), b""
            self.codec.start()
            transport.write(self.codec.data_to_send())

        def data_received(self, data: bytes) -> None:
            c = self.codec
            for event in c.receive_data(data):
                match event:
                    case r.SerialDataReceived(chunk) if self.line or chunk.startswith(b"send "):
                        self.line += chunk
                        while b"\n" in self.line:
                            command, _, self.line = self.line.partition(b"\n")
                            c.send_data(os.urandom(int(command.split()[1])))
                    case r.SerialDataReceived(chunk):
                        c.send_data(chunk)  # a loopback otherwise: the echo floor of pyserial's client
                    case r.BaudRateRequested(baud, _):
                        c.ack_baudrate(baud or 115200)
                    case r.DataSizeRequested(bits):
                        c.ack_datasize(bits or 8)
                    case r.ParityRequested(parity):
                        c.ack_parity(parity or Parity.NONE)
                    case r.StopSizeRequested(stopbits):
                        c.ack_stopsize(stopbits or StopBits.ONE)
                    case r.ComControlRequested(code):
                        c.ack_control(code)
                    case r.ComPurgeRequested(which):
                        c.ack_purge(which)
            self.transport.write(c.data_to_send())

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Session, "127.0.0.1", port)
        await server.serve_forever()

    with suppress(KeyboardInterrupt):
        asyncio.run(serve())


def ceiling_to_app(app: App, size: int) -> float:
    """device_to_app against :func:`no_device_server`: MB/s from the request to the app's last read."""
    start = time.monotonic()
    app.write(f"send {size}\n".encode())
    got = 0
    while got < size:
        data = app.read()
        if not data:
            raise RuntimeError(f"the application got {got} of {size} bytes")
        got += len(data)
    return size / (time.monotonic() - start) / 1e6


SER2NET_PYSERIAL = "ser2net + pyserial"
HUB_GATEWAY = "hub --rfc2217 + pyserial"
CLIENT_GATEWAY = "client --rfc2217 (tunnel) + pyserial"
CLIENT_ROLE = "hub <- ser2net (client role), raw app"
CLIENT_ROLE_TUNNEL = "hub <- ser2net (client role), tunnel, PTY app"
NO_DEVICE = "no-device server + pyserial (its ceiling)"
SETUPS: list[tuple[str, Callable[[Setup, DeviceProc], int], str, tuple[str, ...]]] = [
    # name, start, application, what to measure
    (SER2NET_PYSERIAL, start_ser2net, "pyserial", ("a2d", "d2a", "echo")),
    (HUB_GATEWAY, start_hub_gateway, "pyserial", ("a2d", "d2a", "echo")),
    (CLIENT_GATEWAY, start_client_gateway, "pyserial", ("a2d", "d2a", "echo")),
    (CLIENT_ROLE, start_client_role, "raw", ("a2d", "d2a")),
    (CLIENT_ROLE_TUNNEL, start_client_role_tunnel, "pty", ("a2d", "d2a")),
    (NO_DEVICE, start_no_device, "pyserial", ("ceiling", "echo")),
]


def one_round(
    row: dict[str, list[float]], setup: Setup, app: App, device: DeviceProc, what: tuple[str, ...], size: int,
    big: int, echoes: int,
) -> None:  # fmt: skip
    """One repetition of a setup's measurements, each throughput with the servers' CPU time per MB."""

    def timed(key: str, size: int, measure: Callable[[], float]) -> None:
        cpu = setup.cpu_seconds()
        row.setdefault(f"{key}_MBps", []).append(measure())
        row.setdefault(f"{key}_server_cpu_s_per_MB", []).append((setup.cpu_seconds() - cpu) / (size / 1e6))

    if "a2d" in what:
        timed("app_to_device", big, lambda: app_to_device(app, device, big))
    if "d2a" in what:
        timed("device_to_app", size, lambda: device_to_app(app, device, size))
    if "ceiling" in what:
        timed("device_to_app", size, lambda: ceiling_to_app(app, size))
    if "echo" in what:
        samples = echo(app, device, echoes)
        row.setdefault("echo1_p50_ms", []).append(percentile(samples, 50))
        row.setdefault("echo1_p99_ms", []).append(percentile(samples, 99))


def run_targets(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Every setup runs at once, each on a device of its own, and the repetitions go round them in
    turn: a ratio compares figures taken seconds apart, whatever else the machine is doing."""
    results: dict[str, dict[str, list[float]]] = {}
    small, big = args.kib << 10, args.mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-rfc2217-") as tmp, ExitStack() as stack:
        running = []
        for i, (name, start, kind, what) in enumerate(SETUPS):
            if start in (start_ser2net, start_client_role, start_client_role_tunnel) and not os.path.exists(SER2NET):
                print(f"{name}: skipped, no {SER2NET}", file=sys.stderr)
                continue
            device, setup = DeviceProc(), Setup(Path(tmp), f"setup{i}")
            stack.callback(device.close)
            stack.callback(setup.stop)
            try:
                port = start(setup, device)
                app: App = (
                    PyserialApp(port) if kind == "pyserial" else RawApp(port, setup) if kind == "raw" else PtyApp(setup)
                )
            except Exception as exc:  # one setup failing must not hide the others
                print(f"{name}: failed to start: {exc}", file=sys.stderr)
                continue
            stack.callback(app.close)
            running.append((name, setup, app, device, what, small if kind == "pyserial" else big))
        for rep in range(args.reps):
            print(f"repetition {rep + 1} of {args.reps}", file=sys.stderr, flush=True)
            for name, setup, app, device, what, size in running:
                try:
                    one_round(results.setdefault(name, {}), setup, app, device, what, size, big, args.echoes)
                except Exception as exc:
                    print(f"{name}: failed: {exc}", file=sys.stderr)
    return results


def report(results: dict[str, dict[str, list[float]]]) -> list[tuple[str, float, bool]]:
    def m(name: str, key: str) -> float:
        values = results.get(name, {}).get(key)
        return statistics.median(values) if values else float("nan")

    keys = [
        "app_to_device_MBps",
        "device_to_app_MBps",
        "echo1_p50_ms",
        "echo1_p99_ms",
        "app_to_device_server_cpu_s_per_MB",
        "device_to_app_server_cpu_s_per_MB",
    ]
    print("| setup | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name in results:
        print(f"| {name} | " + " | ".join(f"{m(name, k):.3g}" for k in keys) + " |")
    s2n, hub, tunnel, role, ceiling = SER2NET_PYSERIAL, HUB_GATEWAY, CLIENT_GATEWAY, CLIENT_ROLE, NO_DEVICE
    rows = []
    for key in ("app_to_device_MBps", "device_to_app_MBps"):
        way = key.removesuffix("_MBps").replace("_", " ")
        r = m(hub, key) / m(s2n, key)
        rows.append((f"a. hub --rfc2217 / ser2net, {way} (>= 1.5x)", r, r >= 1.5))
    r = m(hub, "device_to_app_MBps") / m(ceiling, "device_to_app_MBps")
    rows.append(("   hub --rfc2217 / pyserial's ceiling, device to app (reference)", r, r >= 0.9))
    r = m(s2n, "device_to_app_MBps") / m(ceiling, "device_to_app_MBps")
    rows.append(("   ser2net / pyserial's ceiling, device to app (reference)", r, r >= 0.9))
    r = m(role, "device_to_app_MBps") / m(s2n, "device_to_app_MBps")
    rows.append(("b. client role device to app / pyserial on ser2net (>= 10x)", r, r >= 10))
    r = m(CLIENT_ROLE_TUNNEL, "device_to_app_MBps") / m(s2n, "device_to_app_MBps")
    rows.append(("b. the same through the tunnel to a client PTY (>= 10x)", r, r >= 10))
    r = m(tunnel, "echo1_p50_ms") / m(s2n, "echo1_p50_ms")
    rows.append(
        (f"c. 1-byte echo p50, client --rfc2217 / ser2net (< 1x; {m(tunnel, 'echo1_p50_ms'):.2f} ms)", r, r < 1)
    )
    print()
    print("| target | ratio | holds |")
    print("|---|---|---|")
    for text, value, ok in rows:
        print(f"| {text} | {value:.2f}x | {'PASS' if ok else 'FAIL'} |")
    return rows


def run_servers(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    kinds = ["comtunnel hub", "comtunnel client (tunnel)", "pyserial"]
    if os.path.exists(SER2NET):
        kinds.insert(2, "ser2net")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            device = Device()
            try:
                with server(kind, device, Path(tmp)) as port:
                    results[kind] = asyncio.run(measure(port, device, args.mib, args.seconds))
            except Exception as exc:  # one peer failing must not hide the others
                print(f"{kind}: failed: {exc}", file=sys.stderr)
            finally:
                device.close()
    keys = [
        "client_to_device_MBps",
        "device_to_client_MBps",
        "paced_921600_MBps",
        "paced_921600_lost_bytes",
        "paced_3000000_MBps",
        "paced_3000000_lost_bytes",
    ]
    print("| server | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for kind, row in results.items():
        print(f"| {kind} | " + " | ".join(f"{row.get(k, float('nan')):.3g}" for k in keys) + " |")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", action="store_true", help="the codec-client comparison of servers instead")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (medians)")
    parser.add_argument("--kib", type=int, default=512, help="device -> pyserial app transfer size")
    parser.add_argument("--mib", type=int, default=4, help="other transfer sizes (--servers: default 8)")
    parser.add_argument("--echoes", type=int, default=300, help="1-byte echoes per repetition")
    parser.add_argument("--seconds", type=float, default=2.0, help="--servers: paced stream length")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-device-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_device_server:
        no_device_server(args.no_device_server)
        return
    if args.servers:
        out: Any = run_servers(args)
    else:
        results = run_targets(args)
        out = {"samples": results, "targets": [[t, v, ok] for t, v, ok in report(results)]}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
