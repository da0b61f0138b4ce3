"""Hub hardening figures: a good client under a handshake flood, and the hub's memory under
connections that each send an incomplete frame and stop.

The hub is a real `comtunnel hub` process on 127.0.0.1, run from the source tree given with
``--tree`` (so the same script measures an older checkout). The flood comes from 127.0.0.1. The
good client connects from 127.0.0.2, as another host would.

    python benchmarks/hardening.py [--tree DIR] [--flood-rate 100] [--seconds 25] [--partial 100]

Flood: ``--flood-rate`` new TCP connections per second, each silent until the hub drops it. Every
second the good client tries a TLS handshake with a valid certificate, and counts it as a success
when the hub's HELLO arrives within 3 s. Memory: ``--partial`` authenticated connections, each
sending HELLO and then a frame header for 1 MiB followed by 1 MiB - 1 bytes (or as much as the hub
takes before it refuses). The hub's VmRSS is read from /proc before, while they are held, and
after they closed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_hub(tree: Path, certs: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tree), "XDG_RUNTIME_DIR": str(log.parent)}
    args = [sys.executable, "-m", "comtunnel", "hub", f"--listen=127.0.0.1:{port}", f"--certs={certs}"]
    args += ["--port=a=loop://", "--control-socket=none"]
    hub = subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tree)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return hub
        time.sleep(0.1)
    hub.kill()
    raise SystemExit(f"the hub did not start: {log.read_text()}")


def good_handshake(context: ssl.SSLContext, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=("127.0.0.2", 0)) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return len(tls.recv(65536)) > 0  # the hub's HELLO
    except (OSError, ssl.SSLError):
        return False


def flood(port: int, rate: float, stop: threading.Event, counts: dict[str, int]) -> None:
    """Silent connections from 127.0.0.1 at ``rate`` per second, each held until the hub drops it:
    one selector loop, so a connection is closed the moment we want (no thread blocked in recv)."""
    selector = selectors.DefaultSelector()
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        while now >= next_at:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_READ)
            counts["opened"] += 1
            next_at += interval
        for key, _ in selector.select(max(0.0, next_at - time.monotonic())):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                if sock.recv(4096):  # type: ignore[attr-defined]
                    continue
            except OSError:
                pass
            selector.unregister(sock)
            sock.close()  # type: ignore[attr-defined]
            counts["dropped by the hub"] += 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()


def measure_flood(context: ssl.SSLContext, port: int, rate: float, seconds: float) -> dict[str, object]:
    stop = threading.Event()
    counts = {"opened": 0, "dropped by the hub": 0}
    thread = threading.Thread(target=flood, args=(port, rate, stop, counts), daemon=True)
    thread.start()
    time.sleep(1.0)
    results = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        began = time.monotonic()
        results.append(good_handshake(context, port))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
    stop.set()
    thread.join(10)
    return {"good client successes": sum(results), "attempts": len(results), **counts}


def measure_partial(context: ssl.SSLContext, port: int, hub: subprocess.Popen[bytes], count: int) -> dict[str, int]:
    from comtunnel.protocol.mux import Connection, Role

    hello = Connection(Role.CLIENT).data_to_send()
    body = 1 << 20
    before = rss_kib(hub.pid)
    conns = []
    for _ in range(count):
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(hello + body.to_bytes(4, "big"))
            tls.settimeout(0.05)
            sent = 0
            chunk = b"\x00" * 65536
            while sent < body - 1:
                try:
                    sent += tls.send(chunk[: min(len(chunk), body - 1 - sent)])
                except (TimeoutError, ssl.SSLWantWriteError):
                    break  # the hub stopped reading or refused: as much as it takes
            conns.append(tls)
        except (OSError, ssl.SSLError):
            pass
    time.sleep(2.0)
    held = rss_kib(hub.pid)
    for tls in conns:
        with contextlib.suppress(OSError):
            tls.close()
    time.sleep(2.0)
    after = rss_kib(hub.pid)
    return {"connections": len(conns), "rss before KiB": before, "rss held KiB": held, "rss after KiB": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=HERE, help="the comtunnel source tree to run the hub from")
    parser.add_argument("--flood-rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--partial", type=int, default=100)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from comtunnel.certs import init_certs
    from comtunnel.tls import client_context

    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs"
        init_certs(certs, ["127.0.0.1"], ["alice"])
        context = client_context(certs, "alice")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        results: dict[str, object] = {"tree": str(args.tree)}
        hub = start_hub(args.tree, certs, port, Path(tmp) / "hub.log")
        try:
            results["flood"] = measure_flood(context, port, args.flood_rate, args.seconds)
            time.sleep(12)  # every flood connection dropped
            results["partial frames"] = measure_partial(context, port, hub, args.partial)
        finally:
            hub.kill()
            hub.wait(10)
        log_lines = (Path(tmp) / "hub.log").read_text().count("\n")
        results["hub log lines"] = log_lines
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
