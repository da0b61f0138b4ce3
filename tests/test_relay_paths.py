"""What works direct works through the relay, with relay, hubs and clients as separate `comtunnel`
processes and neither end listening: two hubs and several clients behind one relay, `list`,
`console`, a client's RFC 2217 gateway, a cut on either leg alone, a relay under a CA of its own
(`--relay-ca`), and a relay refused when it answers as the hub with its own certificate."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from faultproxy import FaultProxy
from support import (
    Proc,
    PtyDevice,
    comtunnel,
    open_app_seen,
    payload,
    read_exactly,
    start_relay,
    write_all,
)

from comtunnel.certs import init_certs, issue_relay, replace_hub

HUB_NAME, HUB2_NAME = "hub.test", "hub2.test"  # verified only inside the tunnel: nothing resolves them
ALL_BYTES = bytes(range(256))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One CA: hub.test, hub2.test (a directory of its own), clients alice and bob, a relay at
    127.0.0.1; and a relay CA of its own, whose relay.crt hubs and clients can verify only with
    --relay-ca."""
    main = tmp_path_factory.mktemp("relay-paths-certs")
    init_certs(main, [HUB_NAME], ["alice", "bob"])
    issue_relay(main, ["127.0.0.1"])
    second = tmp_path_factory.mktemp("relay-paths-hub2")
    for name in ("ca.crt", "ca.key"):
        shutil.copy(main / name, second / name)
    replace_hub(second, [HUB2_NAME])
    own = tmp_path_factory.mktemp("relay-paths-relay-ca")
    init_certs(own, ["operator.invalid"], [])
    issue_relay(own, ["127.0.0.1"])
    return {"main": main, "hub2": second, "relay_ca": own}


@pytest.fixture
def devices() -> Iterator[list[PtyDevice]]:
    made = [PtyDevice() for _ in range(3)]
    yield made
    for device in made:
        device.close()


def start_hub(tmp: Path, certs: Path, procs: list[Proc], relay: str, ports: dict[str, str], name: str = "hub") -> Proc:
    options = [f"--port={port}={path}" for port, path in ports.items()]
    hub = Proc(tmp, name, "hub", "--relay", relay, "--certs", str(certs), "--control-socket", "none", *options)
    procs.append(hub)
    hub.wait_for(r"registered at the relay 127\.0\.0\.1:\d+ as ")
    return hub


def start_client(
    tmp: Path, certs: Path, procs: list[Proc], relay: str, hub: str, *args: str, who: str = "alice", name: str = ""
) -> Proc:
    options = ["--relay", relay, "--hub-name", hub, "--certs", str(certs), "--name", who]
    client = Proc(tmp, name or f"client-{who}-{hub}", "client", *options, *args)
    procs.append(client)
    client.wait_for(r"connected to hub")
    return client


def exchange(app: int, device: int, seed: int, size: int) -> None:
    """``size`` bytes app -> device, then as many device -> app, checked byte for byte; the writer
    in a thread, as a PTY holds only a few kB."""
    for src, dst, data in ((app, device, payload(seed, size)), (device, app, payload(seed + 1, size))):
        writer = threading.Thread(target=write_all, args=(src, data), daemon=True)
        writer.start()
        try:
            assert read_exactly(dst, len(data), timeout=10) == data
        finally:
            writer.join(10)


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(comtunnel(*args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(40)
def test_two_hubs_and_two_clients_of_one_hub_behind_one_relay(
    tmp_path: Path, certs: dict[str, Path], procs: list[Proc], devices: list[PtyDevice]
) -> None:
    relay, port = start_relay(tmp_path, certs["main"], procs)
    where = f"127.0.0.1:{port}"
    a, b, c = devices
    start_hub(tmp_path, certs["main"], procs, where, {"p0": a.path, "p1": b.path})
    start_hub(tmp_path, certs["hub2"], procs, where, {"q0": c.path}, name="hub2")
    alice = start_client(tmp_path, certs["main"], procs, where, HUB_NAME, f"--link=p0={tmp_path / 'p0'}")
    bob = start_client(tmp_path, certs["main"], procs, where, HUB_NAME, f"--link=p1={tmp_path / 'p1'}", who="bob")
    alice2 = start_client(tmp_path, certs["main"], procs, where, HUB2_NAME, f"--link=q0={tmp_path / 'q0'}")
    for seed, (client, link, device) in enumerate(((alice, "p0", a), (bob, "p1", b), (alice2, "q0", c))):
        fd = open_app_seen(tmp_path / link, client, link)
        try:
            exchange(fd, device.master, seed * 10, 32 * 1024)
        finally:
            os.close(fd)
    status = run_cli("status", "--json", "--socket", str(tmp_path / "relay.sock"))
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert sorted(name for hub in document["hubs"] for name in hub["names"]) == [HUB_NAME, HUB2_NAME]
    pairs = sorted((p["client"], p["hub"]) for p in document["pairings"])
    assert pairs == [("alice", HUB_NAME), ("alice", HUB2_NAME), ("bob", HUB_NAME)]
    assert all(p["bytes_to_hub"] > 32 * 1024 and p["bytes_to_client"] > 32 * 1024 for p in document["pairings"])


@pytest.mark.timeout(40)
def test_list_and_console_through_the_relay(
    tmp_path: Path, certs: dict[str, Path], procs: list[Proc], devices: list[PtyDevice]
) -> None:
    relay, port = start_relay(tmp_path, certs["main"], procs)
    where = f"127.0.0.1:{port}"
    device = devices[0]
    start_hub(tmp_path, certs["main"], procs, where, {"uno": device.path, "gps": devices[1].path})
    ask = ["--relay", where, "--hub-name", HUB_NAME, "--certs", str(certs["main"]), "--name", "alice"]
    listing = run_cli("list", *ask)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert set(rows) == {"uno", "gps"} and device.path in rows["uno"], listing.stdout
    console = subprocess.Popen(
        comtunnel("console", "uno,230400", *ask),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)},
    )
    try:
        assert console.stdin is not None and console.stdout is not None
        console.stdin.write(ALL_BYTES * 4)
        console.stdin.flush()
        assert read_exactly(device.master, len(ALL_BYTES) * 4, timeout=10) == ALL_BYTES * 4
        assert termios.tcgetattr(device.slave)[4] == termios.B230400
        write_all(device.master, ALL_BYTES[::-1] * 4)
        assert read_exactly(console.stdout.fileno(), len(ALL_BYTES) * 4, timeout=10) == ALL_BYTES[::-1] * 4
        console.stdin.close()  # on pipes: exit 0 once what was sent has reached the hub
        assert console.wait(10) == 0
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
        assert console.stderr is not None
        errors = console.stderr.read().decode(errors="replace")
    assert "Traceback" not in errors, errors


@pytest.mark.timeout(40)
def test_a_clients_rfc2217_gateway_through_the_relay(
    tmp_path: Path, certs: dict[str, Path], procs: list[Proc], devices: list[PtyDevice]
) -> None:
    relay, port = start_relay(tmp_path, certs["main"], procs)
    where = f"127.0.0.1:{port}"
    device = devices[0]
    start_hub(tmp_path, certs["main"], procs, where, {"dev": device.path})
    client = start_client(tmp_path, certs["main"], procs, where, HUB_NAME, "--rfc2217", "dev=127.0.0.1:0")
    tcp = int(client.wait_for(r"dev: RFC 2217 server on 127\.0\.0\.1:(\d+)").group(1))
    app = serial.serial_for_url(f"rfc2217://127.0.0.1:{tcp}", baudrate=57600, timeout=5)
    try:
        app.write(ALL_BYTES * 8)  # 0xFF doubled on the telnet leg, single on the device
        assert read_exactly(device.master, len(ALL_BYTES) * 8, timeout=10) == ALL_BYTES * 8
        assert termios.tcgetattr(device.slave)[4] == termios.B57600
        write_all(device.master, ALL_BYTES[::-1] * 8)
        assert app.read(len(ALL_BYTES) * 8) == ALL_BYTES[::-1] * 8
        app.baudrate = 230400
        deadline = time.monotonic() + 5
        while termios.tcgetattr(device.slave)[4] != termios.B230400:
            assert time.monotonic() < deadline, "the baud change did not reach the device"
            time.sleep(0.02)
    finally:
        app.close()


class Stream:
    """300 kB each way on one port at once, both readers counting, so a test can cut mid-stream."""

    def __init__(self, app: int, device: int, size: int = 300_000) -> None:
        self.size = size
        self.up, self.down = payload(20, size), payload(21, size)
        self.got = [bytearray(), bytearray()]  # at the device, at the application
        self.threads = [
            threading.Thread(target=write_all, args=(app, self.up), daemon=True),
            threading.Thread(target=write_all, args=(device, self.down), daemon=True),
            threading.Thread(target=self._read, args=(device, self.got[0]), daemon=True),
            threading.Thread(target=self._read, args=(app, self.got[1]), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _read(self, fd: int, into: bytearray) -> None:
        deadline = time.monotonic() + 30
        while len(into) < self.size and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                into += os.read(fd, self.size - len(into))

    def wait_moved(self, at_least: int) -> list[int]:
        deadline = time.monotonic() + 10
        while min(len(g) for g in self.got) < at_least and time.monotonic() < deadline:
            time.sleep(0.005)
        return [len(g) for g in self.got]

    def join(self) -> None:
        for thread in self.threads:
            thread.join(25)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("leg", ["client", "hub"])
def test_a_cut_on_one_leg_resumes_with_nothing_lost(
    tmp_path: Path, certs: dict[str, Path], procs: list[Proc], devices: list[PtyDevice], leg: str
) -> None:
    relay, port = start_relay(tmp_path, certs["main"], procs)
    with FaultProxy("127.0.0.1", port) as proxy:
        direct, through = f"127.0.0.1:{port}", f"127.0.0.1:{proxy.port}"
        device = devices[0]
        hub = start_hub(tmp_path, certs["main"], procs, through if leg == "hub" else direct, {"p0": device.path})
        link = f"--link=p0={tmp_path / 'p0'}"
        client = start_client(tmp_path, certs["main"], procs, through if leg == "client" else direct, HUB_NAME, link)
        fd = open_app_seen(tmp_path / "p0", client, "p0")
        try:
            stream = Stream(fd, device.master)
            before = stream.wait_moved(20_000)
            proxy.cut()  # RST on this leg's connections only; the other leg stays up
            moved = [len(g) for g in stream.got]
            client.wait_for(r"session resumed: p0", timeout=30)
            stream.join()
        finally:
            os.close(fd)
    assert min(before) >= 20_000 and max(moved) < stream.size, f"not cut mid-stream: {moved} of {stream.size}"
    assert bytes(stream.got[0]) == stream.up, "app -> device: bytes lost or changed across the cut"
    assert bytes(stream.got[1]) == stream.down, "device -> app: bytes lost or changed across the cut"
    if leg == "hub":
        assert hub.text().count("registered at the relay") >= 2, hub.text()


@pytest.mark.timeout(40)
def test_a_relay_under_its_own_ca_with_relay_ca(
    tmp_path: Path, certs: dict[str, Path], procs: list[Proc], devices: list[PtyDevice]
) -> None:
    own, main = certs["relay_ca"], certs["main"]
    relay, port = start_relay(tmp_path, own, procs, "--relay-ca", str(main / "ca.crt"))
    where = f"127.0.0.1:{port}"
    device = devices[0]
    start_hub(tmp_path, main, procs, where, {"p0": device.path})  # a hub does not verify the relay
    ask = ["--relay", where, "--hub-name", HUB_NAME, "--certs", str(main), "--name", "alice"]
    refused = run_cli("list", *ask, "--connect-timeout", "5")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "relay" in refused.stderr and "Traceback" not in refused.stderr
    client = start_client(
        tmp_path, main, procs, where, HUB_NAME, "--relay-ca", str(own / "ca.crt"), f"--link=p0={tmp_path / 'p0'}"
    )
    fd = open_app_seen(tmp_path / "p0", client, "p0")
    try:
        exchange(fd, device.master, 40, 16 * 1024)
    finally:
        os.close(fd)
    listing = run_cli("list", *ask, "--relay-ca", str(own / "ca.crt"))
    assert listing.returncode == 0 and "p0" in listing.stdout, listing.stderr
    misuse = run_cli("list", *ask[2:], "--connect", where, "--relay-ca", str(own / "ca.crt"))
    assert misuse.returncode == 2 and "--relay-ca" in misuse.stderr, misuse.stderr


@pytest.mark.timeout(40)
def test_a_relay_answering_as_the_hub_with_its_own_certificate_is_refused(
    tmp_path: Path, certs: dict[str, Path], procs: list[Proc], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A relay certificate of the hubs' CA that holds the hub's name (which `certs relay` refuses
    to make next to hub.crt, so it is made in a directory without one) lets its holder end the
    inner session itself. Here that holder runs a hub with the relay's own certificate and key
    behind the relay: the client must refuse it as the relay, not take it for the hub."""
    main = certs["main"]
    rogue = tmp_path_factory.mktemp("rogue-relay")
    for name in ("ca.crt", "ca.key"):
        shutil.copy(main / name, rogue / name)
    issue_relay(rogue, ["127.0.0.1", HUB_NAME])
    posing = tmp_path_factory.mktemp("posing-hub")
    shutil.copy(main / "ca.crt", posing / "ca.crt")
    shutil.copy(rogue / "relay.crt", posing / "hub.crt")
    shutil.copy(rogue / "relay.key", posing / "hub.key")
    os.chmod(posing / "hub.key", 0o600)
    relay, port = start_relay(tmp_path, rogue, procs)
    start_hub(tmp_path, posing, procs, f"127.0.0.1:{port}", {"x": "/dev/null"})
    refused = run_cli(
        "list", "--relay", f"127.0.0.1:{port}", "--hub-name", HUB_NAME, "--certs", str(main), "--name", "alice"
    )
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "the relay answered as hub hub.test with its own certificate" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    link = f"--link=x={tmp_path / 'x'}"
    client = run_cli("client", "--relay", f"127.0.0.1:{port}", "--hub-name", HUB_NAME, "--certs", str(main), "--name",
                     "alice", link)  # fmt: skip
    assert client.returncode == 3, client.stdout + client.stderr
    assert "with its own certificate" in client.stderr and not (tmp_path / "x").exists()
