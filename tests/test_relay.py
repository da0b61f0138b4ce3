"""The relay as real processes on 127.0.0.1: relay, hub and client each a `comtunnel` process, and
neither hub nor client listening. Data byte-exact both ways, the relay killed and restarted
mid-stream with nothing lost, another CA's certificates refused, and no serial data in the
relay's logs or status."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Proc, PtyDevice, comtunnel, open_app_seen, payload, read_exactly, start_relay, write_all

from comtunnel.certs import init_certs, issue_relay

HUB_NAME = "hub.test"  # only ever verified inside the tunnel: nothing resolves it


@pytest.fixture(scope="module")
def relay_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a hub named hub.test, a relay at 127.0.0.1 and client alice."""
    directory = tmp_path_factory.mktemp("relay-certs")
    init_certs(directory, [HUB_NAME], ["alice"])
    issue_relay(directory, ["127.0.0.1"])
    return directory


@pytest.fixture
def devices() -> Iterator[list[PtyDevice]]:
    made = [PtyDevice(), PtyDevice()]
    yield made
    for device in made:
        device.close()


def start_pair(
    tmp: Path, certs: Path, procs: list[Proc], relay_port: int, devices: list[PtyDevice]
) -> tuple[Proc, Proc]:
    relay = f"127.0.0.1:{relay_port}"
    ports = [f"--port=p{i}={device.path}" for i, device in enumerate(devices)]
    hub = Proc(tmp, "hub", "hub", "--relay", relay, "--certs", str(certs), "--control-socket", "none", *ports)
    procs.append(hub)
    hub.wait_for(r"registered at the relay 127\.0\.0\.1:\d+ as hub\.test")
    links = [f"--link=p{i}={tmp / f'p{i}'}" for i in range(len(devices))]
    client = Proc(
        tmp,
        "client",
        "client",
        "--relay",
        relay,
        "--hub-name",
        HUB_NAME,
        "--certs",
        str(certs),
        "--name",
        "alice",
        *links,
    )
    procs.append(client)
    client.wait_for(r"connected to hub")
    return hub, client


def send(src: int, dst: int, data: bytes) -> bytes:
    """Write ``data`` to ``src`` from a thread while reading as much from ``dst``: a PTY holds only
    a few kB, so writing all before reading would stall any path with a full port at its end."""
    writer = threading.Thread(target=write_all, args=(src, data), daemon=True)
    writer.start()
    try:
        return read_exactly(dst, len(data), timeout=10)
    finally:
        writer.join(10)


def both_ways(tmp: Path, client: Proc, devices: list[PtyDevice], seed: int, size: int) -> list[int]:
    """Every port: ``size`` bytes app -> device and device -> app, checked byte for byte."""
    fds = [open_app_seen(tmp / f"p{i}", client, f"p{i}") for i in range(len(devices))]
    try:
        for i, (fd, device) in enumerate(zip(fds, devices, strict=True)):
            up, down = payload(seed + i, size), payload(seed + 100 + i, size)
            assert send(fd, device.master, up) == up, f"p{i}: app -> device differs"
            assert send(device.master, fd, down) == down, f"p{i}: device -> app differs"
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


@pytest.mark.timeout(30)
def test_data_both_ways_on_two_ports_through_the_relay(
    tmp_path: Path, relay_certs: Path, procs: list[Proc], devices: list[PtyDevice]
) -> None:
    relay, port = start_relay(tmp_path, relay_certs, procs)
    _, client = start_pair(tmp_path, relay_certs, procs, port, devices)
    for fd in both_ways(tmp_path, client, devices, seed=1, size=64 * 1024):
        os.close(fd)
    relay.wait_for(r"client alice \(127\.0\.0\.1:\d+\) paired with hub hub\.test")


class Reader(threading.Thread):
    """Reads ``size`` bytes from ``fd`` into ``got``, so a test can see how far a stream came."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.size = fd, size
        self.got = bytearray()

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while len(self.got) < self.size and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                self.got += os.read(self.fd, self.size - len(self.got))


@pytest.mark.timeout(40)
def test_relay_killed_mid_stream_the_session_resumes_with_nothing_lost(
    tmp_path: Path, relay_certs: Path, procs: list[Proc], devices: list[PtyDevice]
) -> None:
    relay, port = start_relay(tmp_path, relay_certs, procs)
    hub, client = start_pair(tmp_path, relay_certs, procs, port, devices[:1])
    fd = open_app_seen(tmp_path / "p0", client, "p0")
    master = devices[0].master
    size = 300_000  # at 9600 baud nothing paces a PTY: this takes a moment, and the relay dies in it
    up, down = payload(10, size), payload(11, size)
    readers = [Reader(master, size), Reader(fd, size)]
    writers = [threading.Thread(target=write_all, args=args, daemon=True) for args in ((fd, up), (master, down))]
    try:
        for thread in (*readers, *writers):
            thread.start()
        deadline = time.monotonic() + 10
        while min(len(r.got) for r in readers) < 20_000 and time.monotonic() < deadline:
            time.sleep(0.005)
        relay.popen.send_signal(signal.SIGKILL)  # mid-stream: both directions still flowing
        relay.popen.wait(5)
        moved = [len(r.got) for r in readers]
        client.wait_for(r"connection to the hub lost")
        start_relay(tmp_path, relay_certs, procs, port=port, name="relay2")
        client.wait_for(r"session resumed: p0", timeout=20)
        for thread in (*readers, *writers):
            thread.join(20)
    finally:
        os.close(fd)
    assert min(moved) > 0 and max(moved) < size, f"the relay was not killed mid-stream: {moved} of {size}"
    assert bytes(readers[0].got) == up, "app -> device: bytes lost or changed across the relay's restart"
    assert bytes(readers[1].got) == down, "device -> app: bytes lost or changed across the relay's restart"
    assert "registered at the relay" in hub.text().split("closed the connection")[-1]


@pytest.mark.timeout(30)
def test_certificates_from_another_ca_are_refused_by_the_relay(
    tmp_path: Path, relay_certs: Path, other_certs: Path, procs: list[Proc]
) -> None:
    relay, port = start_relay(tmp_path, relay_certs, procs)
    where = f"127.0.0.1:{port}"
    # mallory's CA is not the relay's, and the relay's certificate is not from mallory's CA either:
    # trust the relay's CA for the outer session, so the relay is the one that refuses.
    mixed = tmp_path / "mallory"
    mixed.mkdir()
    for name in ("mallory.crt", "mallory.key"):
        (mixed / name).write_bytes((other_certs / name).read_bytes())
    (mixed / "ca.crt").write_bytes((other_certs / "ca.crt").read_bytes() + (relay_certs / "ca.crt").read_bytes())
    options = ["--relay", where, "--hub-name", HUB_NAME, "--certs", str(mixed), "--name", "mallory"]
    listing = subprocess.run(
        comtunnel("list", *options, "--connect-timeout", "5"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert listing.returncode == 3, listing.stderr
    assert "relay" in listing.stderr and "Traceback" not in listing.stderr
    relay.wait_for(r"TLS with 127\.0\.0\.1:\d+ failed: .*not signed by our CA")
    # a hub of another CA: the relay, its TLS client, refuses its certificate
    options = ["--relay", where, "--certs", str(other_certs), "--control-socket", "none", "--port", "x=/dev/null"]
    hub = Proc(tmp_path, "hub", "hub", *options)
    procs.append(hub)
    hub.wait_for(r"cannot register at the relay")
    relay.wait_for(r"TLS with 127\.0\.0\.1:\d+ failed: the hub's certificate is not signed by our CA")
    assert "registered" not in relay.text()


@pytest.mark.timeout(30)
def test_the_relay_logs_and_status_hold_no_serial_data(
    tmp_path: Path, relay_certs: Path, procs: list[Proc], devices: list[PtyDevice]
) -> None:
    relay, port = start_relay(tmp_path, relay_certs, procs)
    _, client = start_pair(tmp_path, relay_certs, procs, port, devices[:1])
    marker = b"MARKER-7f3a-serial-data-" * 50
    fd = open_app_seen(tmp_path / "p0", client, "p0")
    try:
        assert send(fd, devices[0].master, marker) == marker
        assert send(devices[0].master, fd, marker) == marker
    finally:
        os.close(fd)
    status = subprocess.run(
        comtunnel("status", "--json", "--socket", str(tmp_path / "relay.sock")),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert [h["names"] for h in document["hubs"]] == [[HUB_NAME]]
    (pairing,) = document["pairings"]
    assert pairing["client"] == "alice" and pairing["hub"] == HUB_NAME
    assert pairing["bytes_to_hub"] > len(marker) and pairing["bytes_to_client"] > len(marker)
    table = subprocess.run(
        comtunnel("status", "--socket", str(tmp_path / "relay.sock")), capture_output=True, text=True, timeout=10
    )
    assert "alice" in table.stdout, table.stdout + table.stderr
    relay.stop()
    for text in (relay.log.read_bytes(), status.stdout.encode(), table.stdout.encode()):
        assert b"MARKER-7f3a" not in text
