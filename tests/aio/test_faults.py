"""Issue 4 end to end: cut, stalled and restarted links, and unplugged devices, with real processes.

The hub and client are `comtunnel` processes; between them a FaultProxy on 127.0.0.1 cuts (RST) or
stalls (silence, no FIN) the connection on command. Devices are PTYs driven from the test; the
application side opens the client's virtual port once and keeps it open throughout, as a real
application would. Device output is paced (a device cannot be held back), application output is not.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from support import Proc, PtyDevice, open_app_seen, read_exactly, start_client, start_hub, write_all


class Transfer:
    """Write ``data`` into ``src`` (paced to ``rate`` bytes/s if given) while reading it from ``dst``."""

    def __init__(self, src: int, dst: int, data: bytes, rate: float | None = None, timeout: float = 45) -> None:
        self.data = data
        self.got = b""
        self.error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._guard(self._write, src, rate), daemon=True),
            threading.Thread(target=self._guard(self._read, dst, timeout), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _guard(self, fn: Callable[..., None], *args: object) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # reported by check()
                self.error = exc

        return run

    def _write(self, fd: int, rate: float | None) -> None:
        start = time.monotonic()
        for offset in range(0, len(self.data), 8192):
            if rate is not None:
                delay = start + offset / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            write_all(fd, self.data[offset : offset + 8192])

    def _read(self, fd: int, timeout: float) -> None:
        self.got = read_exactly(fd, len(self.data), timeout)

    @property
    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def check(self) -> None:
        for thread in self._threads:
            thread.join(60)
        assert self.error is None, f"transfer failed: {self.error!r}"
        assert len(self.got) == len(self.data)
        assert self.got == self.data, "bytes lost, doubled or reordered"


def start_pair(tmp: Path, certs: Path, procs: list[Proc], devices: dict[str, PtyDevice], *hub_args: str):
    hub_port = start_hub(tmp, certs, procs, *[f"--port={n}={d.path}" for n, d in devices.items()], *hub_args)
    return int(hub_port)


def connect_client(tmp: Path, certs: Path, procs: list[Proc], port: int, names: list[str]) -> Proc:
    links = [f"--link={n}={tmp / n},115200" for n in names]
    client = start_client(tmp, certs, procs, str(port), *links)
    for n in names:
        client.wait_for(rf"{n}: open on the hub")
    return client


@pytest.mark.timeout(120)
def test_cuts_during_two_way_transfers_on_three_ports_lose_and_double_nothing(
    tmp_path: Path, certs: Path, procs: list[Proc]
) -> None:
    names = ["a", "b", "c"]
    devices = {n: PtyDevice() for n in names}
    try:
        hub_port = start_pair(tmp_path, certs, procs, devices)
        with FaultProxy("127.0.0.1", hub_port) as proxy:
            client = connect_client(tmp_path, certs, procs, proxy.port, names)
            apps = {n: open_app_seen(tmp_path / n, client, n) for n in names}
            size = 4 << 20
            transfers = []
            for n in names:
                transfers.append(Transfer(apps[n], devices[n].master, os.urandom(size)))  # app -> device
                transfers.append(Transfer(devices[n].master, apps[n], os.urandom(size), rate=1.5e6))  # device -> app
            cuts = 0
            while not all(t.done for t in transfers) and cuts < 5:
                time.sleep(0.5)
                proxy.cut()
                cuts += 1
            for transfer in transfers:
                transfer.check()
            assert cuts >= 3, "the transfer finished before the connection was cut several times"
            resumed = client.text().count("session resumed")
            assert resumed >= 3, client.text()
            assert "dropping" not in procs[0].text()  # no device output was dropped
            for fd in apps.values():
                os.close(fd)
    finally:
        for device in devices.values():
            device.close()


@pytest.mark.timeout(90)
def test_link_stalled_without_fin_is_declared_dead_and_the_session_resumes(
    tmp_path: Path, certs: Path, procs: list[Proc]
) -> None:
    device = PtyDevice()
    try:
        hub_port = start_pair(tmp_path, certs, procs, {"s": device})
        with FaultProxy("127.0.0.1", hub_port) as proxy:
            client = connect_client(tmp_path, certs, procs, proxy.port, ["s"])
            app = open_app_seen(tmp_path / "s", client, "s")
            proxy.stall()
            stalled = time.monotonic()
            down = Transfer(device.master, app, os.urandom(200_000), rate=20_000, timeout=60)
            up = Transfer(app, device.master, os.urandom(200_000), timeout=60)
            client.wait_for(r"no data from the hub \S+ for 15 s", timeout=25)
            detected = time.monotonic() - stalled
            client.wait_for(r"session resumed", timeout=20)
            down.check()
            up.check()
            assert 14 <= detected <= 20, f"dead peer noticed after {detected:.1f} s"
            proxy.resume()  # the stalled connection, long dead, is released
            os.close(app)
    finally:
        device.close()


@pytest.mark.timeout(90)
def test_hub_killed_and_restarted_the_client_reopens_and_counts_what_it_lost(
    tmp_path: Path, certs: Path, procs: list[Proc]
) -> None:
    device = PtyDevice()
    try:
        hub_port = start_pair(tmp_path, certs, procs, {"k": device})
        client = connect_client(tmp_path, certs, procs, hub_port, ["k"])
        app = open_app_seen(tmp_path / "k", client, "k")
        write_all(app, b"before")
        assert read_exactly(device.master, 6, 10) == b"before"
        procs[0].popen.send_signal(signal.SIGKILL)
        procs[0].popen.wait(10)
        # Written once the client knows: bytes it took before noticing went into the dead connection,
        # and are counted as possibly lost (they may have reached the device before the hub died).
        client.wait_for(r"connection to the hub lost")
        write_all(app, b"while the hub is down")  # waits in the PTY: the application is not told
        hub2 = Proc(
            tmp_path,
            "hub2",
            "hub",
            "--listen",
            f"127.0.0.1:{hub_port}",
            "--certs",
            str(certs),
            f"--port=k={device.path}",
        )
        procs.append(hub2)
        client.wait_for(r"could not resume the session", timeout=20)
        client.wait_for(r"k: open on the hub.*\n(.*\n)*.*k: open on the hub", timeout=20)
        assert read_exactly(device.master, 21, 10) == b"while the hub is down"
        write_all(device.master, b"after")
        assert read_exactly(app, 5, 10) == b"after"
        os.close(app)
    finally:
        device.close()


@pytest.mark.timeout(60)
def test_unplugged_device_is_reported_and_reopened_with_its_settings(
    tmp_path: Path, certs: Path, procs: list[Proc]
) -> None:
    first = PtyDevice()
    link = tmp_path / "by-id-usb-serial"
    link.symlink_to(first.path)
    second: PtyDevice | None = None
    try:
        hub_port = start_hub(tmp_path, certs, procs, f"--port=u={link}")
        client = connect_client(tmp_path, certs, procs, int(hub_port), ["u"])
        app = open_app_seen(tmp_path / "u", client, "u")
        write_all(app, b"one")
        assert read_exactly(first.master, 3, 10) == b"one"
        link.unlink()  # the USB cable is pulled: the node goes, reads fail
        first.close()
        client.wait_for(r"u: the device is gone on the hub", timeout=10)
        write_all(app, b"queued while gone")
        second = PtyDevice()
        link.symlink_to(second.path)
        procs[0].wait_for(r"u: .* is back \(115200,8N1\)", timeout=10)
        client.wait_for(r"u: device .* is back", timeout=10)
        assert read_exactly(second.master, 17, 10) == b"queued while gone"
        write_all(second.master, b"two")
        assert read_exactly(app, 3, 10) == b"two"
        os.close(app)
    finally:
        first.close()
        if second is not None:
            second.close()


@pytest.mark.timeout(60)
def test_session_not_resumed_within_the_grace_period_is_closed_and_reopened(
    tmp_path: Path, certs: Path, procs: list[Proc]
) -> None:
    device = PtyDevice()
    try:
        hub_port = start_pair(tmp_path, certs, procs, {"g": device}, "--grace=1")
        with FaultProxy("127.0.0.1", hub_port) as proxy:
            client = connect_client(tmp_path, certs, procs, proxy.port, ["g"])
            app = open_app_seen(tmp_path / "g", client, "g")
            proxy.refuse(True)
            proxy.cut()
            procs[0].wait_for(r"client alice did not come back after 1 s: closing g", timeout=10)
            proxy.refuse(False)
            client.wait_for(r"could not resume the session", timeout=15)
            client.wait_for(r"g: open on the hub(.*\n)+.*g: open on the hub", timeout=15)
            write_all(app, b"after")
            assert read_exactly(device.master, 5, 10) == b"after"
            os.close(app)
    finally:
        device.close()


@pytest.mark.timeout(60)
def test_restarted_client_takes_its_held_ports_back_at_once(tmp_path: Path, certs: Path, procs: list[Proc]) -> None:
    device = PtyDevice()
    try:
        hub_port = start_pair(tmp_path, certs, procs, {"r": device})
        first = connect_client(tmp_path, certs, procs, hub_port, ["r"])
        first.popen.send_signal(signal.SIGKILL)  # no GOAWAY: the hub keeps the session for a resume
        first.popen.wait(10)
        procs[0].wait_for(r"keeping r open for 60 s")
        second = start_client(tmp_path, certs, procs, str(hub_port), f"--link=r={tmp_path / 'r2'}", name="client2")
        second.wait_for(r"r: open on the hub", timeout=10)
        assert "client alice started a new session" in procs[0].text()
        app = open_app_seen(tmp_path / "r2", second, "r")
        write_all(device.master, b"hello")
        assert read_exactly(app, 5, 10) == b"hello"
        os.close(app)
    finally:
        device.close()
