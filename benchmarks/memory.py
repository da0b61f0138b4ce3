"""What a hub and a client hold in memory, with 0, 1, 32 and 128 ports open (issue 12, point 4).

    python benchmarks/memory.py [--ports 0,1,32,128] [--bytes 262144]

For each port count: a real `comtunnel hub` and `comtunnel client` (TLS on 127.0.0.1, emulated PTY
devices in a process of their own, an application holding every virtual port open), then RSS per
process once the channels are open, again after traffic in both directions on every port, and the
peak (VmHWM). The per-port figure is the slope between the smallest and largest port counts, so the
interpreter and libraries every process loads cancel out. The target is hub + client peak <= 64 MiB
with 32 ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import DeviceProc, PtyApp, Setup, certs_dir, cpu_seconds, free_port, spawn, wait_path, wait_port

KIB = 1024


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of one process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def traffic(setup: Setup, size: int) -> None:
    """``size`` bytes from every device to its application, then from every application to its device."""
    count = len(setup.apps)
    if not count:
        return
    setup.device.send("source", ports=list(range(count)), bytes=size, rate=0)
    got = [0] * count

    def read(i: int) -> None:
        deadline = time.monotonic() + 60
        while got[i] < size and time.monotonic() < deadline:
            got[i] += len(setup.apps[i].read(0.5))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    setup.device.answer()
    setup.device.send("sink", ports=list(range(count)), bytes=size, timeout=60)
    data = bytes(range(256)) * (size // 256)
    for app in setup.apps:
        app.write(data)
    results = setup.device.answer()
    short = [r for r in results if r["bytes"] < len(data)] + [g for g in got if g < size]
    if short:
        print(f"  warning: {len(short)} transfers incomplete", file=sys.stderr)


def start(ports: int, tmp: Path) -> Setup:
    """A hub serving max(1, ports) devices (it needs one) and a client linking ``ports`` of them."""
    device = DeviceProc(max(1, ports))
    certs = certs_dir(tmp)
    log = (tmp / f"comtunnel-{ports}.log").open("wb")
    port = free_port()
    hub = spawn(
        [sys.executable, "-m", "comtunnel", "-q", "hub", "--listen", f"127.0.0.1:{port}", "--certs", str(certs),
         "--control-socket", "none", *[f"--port=p{i}={d}" for i, d in enumerate(device.paths)]],
        stdout=log, stderr=log,
    )  # fmt: skip
    wait_port(port)
    links = tmp / f"links-{ports}"
    client = spawn(
        [sys.executable, "-m", "comtunnel", "-q", "client", "--connect", f"127.0.0.1:{port}", "--certs", str(certs),
         "--name", "bench", *[f"--link=p{i}={links / f'p{i}'}" for i in range(ports)]],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        for i in range(ports):
            wait_path(links / f"p{i}", timeout=30)
    except RuntimeError:
        for proc in (client, hub):
            proc.terminate()
        device.close()
        log.close()
        tail = Path(log.name).read_text(errors="replace").splitlines()[-3:]
        raise RuntimeError(f"{ports} ports: the links did not appear; the log ends: {' | '.join(tail)}") from None
    time.sleep(1 + ports * 0.02)  # the channels open after the links
    apps = [PtyApp(str(links / f"p{i}")) for i in range(ports)]

    def stop() -> None:
        for proc in (client, hub):
            proc.terminate()
            proc.wait(10)

    return Setup(apps, [hub.pid, client.pid], device, stop)


def measure(ports: int, size: int, tmp: Path) -> dict[str, dict[str, int]]:
    setup = start(ports, tmp)
    device = setup.device
    try:
        hub, client = setup.pids
        time.sleep(0.5)
        before = {"hub": memory_kib(hub)["VmRSS"], "client": memory_kib(client)["VmRSS"]}
        cpu = cpu_seconds(setup.pids)
        traffic(setup, size)
        cpu = cpu_seconds(setup.pids) - cpu
        time.sleep(0.5)
        after_hub, after_client = memory_kib(hub), memory_kib(client)
        return {
            "before": before,
            "after": {"hub": after_hub["VmRSS"], "client": after_client["VmRSS"]},
            "peak": {"hub": after_hub["VmHWM"], "client": after_client["VmHWM"]},
            "traffic_cpu_ms": {"both": round(cpu * 1000)},
        }
    finally:
        for app in setup.apps:
            with contextlib.suppress(OSError):
                app.close()
        setup.stop()
        device.close()


def mib(kib: float) -> str:
    return f"{kib / KIB:6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", default="0,1,32,128", help="comma-separated port counts")
    parser.add_argument("--bytes", type=int, default=256 * KIB, help="bytes per port and direction")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()
    counts = [int(n) for n in args.ports.split(",")]
    results: dict[int, dict[str, dict[str, int]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="comtunnel-memory-"))
    try:
        for count in counts:
            results[count] = measure(count, args.bytes, tmp)
    finally:
        if args.keep:
            print(f"logs in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("RSS in MiB: once the channels are open / after traffic / peak (VmHWM); CPU s of both for the traffic")
    print(f"{'ports':>5}  {'hub':^22}  {'client':^22}  {'peak sum':>8}  {'CPU s':>5}")
    for count, r in results.items():
        cells = ["/".join(mib(r[k][side]).strip() for k in ("before", "after", "peak")) for side in ("hub", "client")]
        total = r["peak"]["hub"] + r["peak"]["client"]
        cpu = r["traffic_cpu_ms"]["both"] / 1000
        print(f"{count:>5}  {cells[0]:^22}  {cells[1]:^22}  {mib(total):>8}  {cpu:5.2f}")
    low, high = min(counts), max(counts)
    if high > low:
        print(f"per port ({low} -> {high} ports), KiB:")
        for key in ("before", "after", "peak"):
            slopes = [(results[high][key][s] - results[low][key][s]) / (high - low) for s in ("hub", "client")]
            print(f"  {key:>6}: hub {slopes[0]:6.1f}  client {slopes[1]:6.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
