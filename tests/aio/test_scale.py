"""Scale and stubborn peers: 64 channels in one connection, and an application that never reads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from support import Proc, PtyDevice, open_app, open_app_seen, read_exactly, start_client, start_hub, write_all


@pytest.mark.timeout(120)
def test_64_channels_at_once_each_way_intact(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    count = 64
    devices = [PtyDevice() for _ in range(count)]
    try:
        hub_port = start_hub(tmp_path, certs, procs, *[f"--port=d{i}={d.path}" for i, d in enumerate(devices)])
        client = start_client(tmp_path, certs, procs, hub_port, f"--link-dir={tmp_path / 'ports'}")  # every port
        client.wait_for(r"d63: open on the hub", timeout=30)
        apps = [open_app_seen(tmp_path / "ports" / f"d{i}", client, f"d{i}") for i in range(count)]
        size = 64 * 1024
        payloads = [(os.urandom(size), os.urandom(size)) for _ in range(count)]
        failures: list[str] = []

        def check(i: int) -> None:
            up, down = payloads[i]
            try:
                # Both ends write in threads of their own: the tunnel buffers about what the line
                # drains, as a serial port does, not the whole 64 KiB for a reader that waits.
                writers = [
                    threading.Thread(target=write_all, args=(apps[i], up), daemon=True),
                    threading.Thread(target=write_all, args=(devices[i].master, down), daemon=True),
                ]
                for writer in writers:
                    writer.start()
                if read_exactly(devices[i].master, size, 60) != up:
                    failures.append(f"d{i} app->device")
                if read_exactly(apps[i], size, 60) != down:
                    failures.append(f"d{i} device->app")
                for writer in writers:
                    writer.join(10)
            except Exception as exc:
                failures.append(f"d{i}: {exc!r}")

        threads = [threading.Thread(target=check, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert not failures, failures
        for fd in apps:
            os.close(fd)
    finally:
        for device in devices:
            device.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(120)
def test_application_that_never_reads_stalls_only_its_own_port(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    flood, other = PtyDevice(), PtyDevice()
    try:
        hub_port = start_hub(tmp_path, certs, procs, f"--port=flood={flood.path}", f"--port=other={other.path}")
        client = start_client(
            tmp_path, certs, procs, hub_port, f"--link=flood={tmp_path / 'flood'}", f"--link=other={tmp_path / 'other'}"
        )
        client.wait_for(r"other: open on the hub")
        stubborn = open_app(tmp_path / "flood")  # opened, never read
        app = open_app_seen(tmp_path / "other", client, "other")
        hub_pid, client_pid = procs[0].popen.pid, procs[1].popen.pid
        before = rss_kib(hub_pid), rss_kib(client_pid)
        os.set_blocking(flood.master, False)
        offered = 0
        block = os.urandom(65536)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # the device talks as fast as the hub lets it
            try:
                offered += os.write(flood.master, block)
            except BlockingIOError:
                time.sleep(0.001)
        # the other port of the same client and connection still works, both ways
        write_all(other.master, b"still here")
        assert read_exactly(app, 10, 10) == b"still here"
        write_all(app, b"and back")
        assert read_exactly(other.master, 8, 10) == b"and back"
        after = rss_kib(hub_pid), rss_kib(client_pid)
        growth = [(a - b) / 1024 for a, b in zip(after, before, strict=True)]
        # the device's output went out until the windows throttled it (sized to what the app drains: little)
        assert offered > 32 * 1024
        assert all(g < 30 for g in growth), f"RSS grew by {growth} MiB (hub, client) after {offered >> 20} MiB"
        os.close(stubborn)
        os.close(app)
    finally:
        flood.close()
        other.close()
