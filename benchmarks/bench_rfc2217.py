"""RFC 2217 gateway throughput: comtunnel's servers against ser2net and pyserial's, in one run.

Every server fronts a PTY 'device' driven from this process; the client is comtunnel's own
RFC 2217 client codec on asyncio (the hub's client role), so the servers are compared with the
same client. Measured per server:
  * unpaced throughput each way (MB/s), the device writing / reading as fast as the PTY allows;
  * device -> client paced at 921600 and 3000000 baud (10 bits a byte): delivered rate and loss.

    python benchmarks/bench_rfc2217.py [--mib 8] [--seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

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
    import select

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    kinds = ["comtunnel hub", "comtunnel client (tunnel)", "pyserial"]
    if shutil.which("ser2net") or os.path.exists("/usr/sbin/ser2net"):
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
    base = results.get("ser2net")
    ours = results.get("comtunnel hub")
    if base and ours:
        ratio = ours["client_to_device_MBps"] / base["client_to_device_MBps"]
        print(f"comtunnel hub / ser2net, client->device: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
