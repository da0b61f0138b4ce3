"""`comtunnel console` as a real process against a real hub process and a PTY device: on pipes the
way LAVA's connection drives it, on a real pseudo-terminal with the escape keys, and its exits.

Each test starts its own hub and console and stops them by PID (the ``procs`` fixture and
``Console.stop``)."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from support import Proc, PtyDevice, comtunnel, payload, read_exactly, start_hub, write_all

ALL_BYTES = bytes(range(256))


class Console:
    """A `comtunnel console` process. ``terminal``: its stdin, stdout and stderr are one new
    pseudo-terminal (``master`` is the keyboard and screen); else stdin and stdout are pipes."""

    def __init__(
        self, tmp: Path, certs: Path, hub_port: int | str, *args: str, terminal: bool = False, name: str = "alice"
    ) -> None:
        argv = comtunnel("console", *args, "--connect", f"127.0.0.1:{hub_port}", "--certs", str(certs))
        argv += ["--name", name]
        env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp)}
        self.screen = bytearray()  # what the terminal showed (stdout and stderr)
        self.master = self.slave = -1
        if terminal:
            self.master, self.slave = os.openpty()
            self.before = termios.tcgetattr(self.slave)
            self.popen = subprocess.Popen(
                argv, stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env, start_new_session=True
            )
            self._reader = threading.Thread(target=self._read_screen, daemon=True)
            self._reader.start()
        else:
            self.errors = tmp / f"console-{name}-{len(list(tmp.glob('console-*')))}.err"
            self.err = self.errors.open("wb")
            self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env)

    def _read_screen(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.screen += data

    def stderr(self) -> str:
        if self.master >= 0:
            return self.screen.decode(errors="replace")
        return self.errors.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.stderr()):
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise AssertionError(f"{pattern!r} not seen; console said:\n{self.stderr()}")
            time.sleep(0.02)

    def wait_raw(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.slave)[3] & termios.ECHO:
            assert time.monotonic() < deadline and self.popen.poll() is None, self.stderr()
            time.sleep(0.01)

    def type(self, data: bytes) -> None:
        write_all(self.master, data)

    def read_stdout(self, size: int, timeout: float = 10) -> bytes:
        assert self.popen.stdout is not None
        return read_exactly(self.popen.stdout.fileno(), size, timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            self.popen.stdin.close()
        if hasattr(self, "err"):
            self.err.close()


@pytest.fixture
def device() -> Iterator[PtyDevice]:
    dev = PtyDevice()
    yield dev
    dev.close()


@pytest.fixture
def consoles() -> Iterator[list[Console]]:
    started: list[Console] = []
    yield started
    for console in started:
        console.stop()


def test_pipes_as_lava_drives_them(
    tmp_path: Path, certs: Path, procs: list[Proc], consoles: list[Console], device: PtyDevice
) -> None:
    """A command goes out, the reply comes back, all 256 byte values both ways; stdin closes and
    the console exits 0 once the last bytes reached the device; the trace has every chunk."""
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    trace = tmp_path / "trace.log"
    console = Console(tmp_path, certs, port, "uno,115200,8N1", "--log", str(trace))
    consoles.append(console)
    assert console.popen.stdin is not None
    console.popen.stdin.write(b"uname -a\n")
    console.popen.stdin.flush()
    assert read_exactly(device.master, 9, 10) == b"uname -a\n"
    write_all(device.master, b"Linux board 6.1\r\n# ")
    assert console.read_stdout(19) == b"Linux board 6.1\r\n# "

    console.popen.stdin.write(ALL_BYTES)  # 0x1d included: no escape processing on pipes
    console.popen.stdin.flush()
    assert read_exactly(device.master, 256, 10) == ALL_BYTES
    write_all(device.master, ALL_BYTES)
    assert console.read_stdout(256) == ALL_BYTES

    console.popen.stdin.write(b"poweroff\n")
    console.popen.stdin.close()  # at once: the console must still deliver these bytes
    assert console.popen.wait(10) == 0, console.stderr()
    assert read_exactly(device.master, 9, 5) == b"poweroff\n"

    lines = trace.read_bytes().splitlines()
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z out +9 uname -a\\n", lines[0]), lines[0]
    outgoing = b"".join(line.split(maxsplit=3)[3] for line in lines if line.split()[1] == b"out")
    assert outgoing.endswith(b"poweroff\\n")
    assert b"\\x1d" in outgoing
    assert any(line.split()[1] == b"in" and line.endswith(b"Linux board 6.1\\r\\n# ") for line in lines)


def test_stdin_from_a_file(tmp_path: Path, certs: Path, procs: list[Proc], device: PtyDevice) -> None:
    """``< file`` (no epoll on a file): all of it reaches the device, paced by the window, then exit 0."""
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    data = payload(7, 300_000)
    (tmp_path / "input").write_bytes(data)
    with (tmp_path / "input").open("rb") as stdin:
        console = subprocess.Popen(
            comtunnel("console", "uno", "--connect", f"127.0.0.1:{port}", "--certs", str(certs), "--name", "alice"),
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    try:
        assert read_exactly(device.master, len(data), 20) == data
        assert console.wait(10) == 0
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
        assert console.stderr is not None
        console.stderr.close()


def test_terminal_raw_mode_escape_keys_and_restore(
    tmp_path: Path, certs: Path, procs: list[Proc], consoles: list[Console], device: PtyDevice
) -> None:
    """On a real pseudo-terminal: raw mode (Ctrl-C reaches the device as 0x03, output is not
    translated), BREAK and a baud change seen on the hub's device, Ctrl-] q restores the terminal."""
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    hub = procs[-1]
    console = Console(tmp_path, certs, port, "uno", terminal=True)
    consoles.append(console)
    console.wait_for(r"Ctrl-\] \? help, Ctrl-\] q quit")  # the banner
    console.wait_for(r"uno open \(115200,8N1\)")
    raw = termios.tcgetattr(console.slave)
    assert not raw[3] & (termios.ECHO | termios.ICANON | termios.ISIG)
    assert not raw[1] & termios.OPOST

    console.type(b"\x03ls\r")  # Ctrl-C and Enter as typed, no echo, no CR -> LF
    assert read_exactly(device.master, 4, 5) == b"\x03ls\r"
    write_all(device.master, b"line one\nline two\n")
    console.wait_for("line one\nline two\n")  # no LF -> CR LF on the way out either

    console.type(b"\x1db")
    hub.wait_for(r"uno: DTR=on RTS=on BREAK=on", timeout=5)
    hub.wait_for(r"uno: DTR=on RTS=on BREAK=off", timeout=5)
    console.type(b"\x1dB9600,8N2\r")
    console.wait_for(r"line settings now 9600,8N2")
    device_side = termios.tcgetattr(device.slave)
    assert device_side[4] == device_side[5] == termios.B9600
    assert device_side[2] & termios.CSTOPB
    console.type(b"\x1d\x1d")  # a literal 0x1d
    assert read_exactly(device.master, 1, 5) == b"\x1d"
    console.type(b"\x1ds")
    console.wait_for(r"uno: open, 9600,8N2, DTR on, RTS on, .*in 18 bytes, out 5 bytes")

    console.type(b"\x1dq")
    assert console.popen.wait(10) == 0, console.stderr()
    assert termios.tcgetattr(console.slave) == console.before


def test_pseudo_terminal_as_lava_spawns_it(
    tmp_path: Path, certs: Path, procs: list[Proc], consoles: list[Console], device: PtyDevice
) -> None:
    """LAVA runs connection_command under pexpect, in a pseudo-terminal: with --no-escape -q the
    screen carries the device's bytes only, every byte value passes both ways, and the SIGHUP of
    pexpect's close() ends the console with exit 0 and the terminal restored."""
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    console = Console(tmp_path, certs, port, "uno", "--no-escape", "-q", terminal=True)
    consoles.append(console)
    console.wait_raw()  # before that, the terminal itself would echo what is typed
    console.type(b"cat /proc/version\n")  # most likely before the channel is open: it waits
    assert read_exactly(device.master, 18, 10) == b"cat /proc/version\n"
    console.type(ALL_BYTES)
    assert read_exactly(device.master, 256, 10) == ALL_BYTES
    write_all(device.master, b"Linux version 6.1\r\n" + ALL_BYTES)
    deadline = time.monotonic() + 10
    while len(console.screen) < 19 + 256 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bytes(console.screen) == b"Linux version 6.1\r\n" + ALL_BYTES  # no banner, no notices
    console.popen.send_signal(signal.SIGHUP)
    assert console.popen.wait(10) == 0
    assert termios.tcgetattr(console.slave) == console.before


def test_terminal_restored_after_a_signal(
    tmp_path: Path, certs: Path, procs: list[Proc], consoles: list[Console], device: PtyDevice
) -> None:
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    console = Console(tmp_path, certs, port, "uno", terminal=True)
    consoles.append(console)
    console.wait_for(r"uno open")
    assert termios.tcgetattr(console.slave) != console.before
    console.popen.send_signal(signal.SIGHUP)  # the terminal went away
    assert console.popen.wait(10) == 0
    assert termios.tcgetattr(console.slave) == console.before


def test_monitor_watches_what_another_console_holds(
    tmp_path: Path, certs: Path, procs: list[Proc], consoles: list[Console], device: PtyDevice
) -> None:
    """bob has monitor access to uno while alice's console holds it: bob sees the device's output,
    and nothing bob types reaches the device."""
    hub_config = tmp_path / "hub.toml"
    hub_config.write_text('[access.alice]\nfull = ["*"]\n[access.bob]\nmonitor = ["uno"]\n')
    port = start_hub(
        tmp_path, certs, procs, "--config", str(hub_config), "--port", f"uno={device.path}", "--control-socket", "none"
    )
    alice = Console(tmp_path, certs, port, "uno")
    consoles.append(alice)
    assert alice.popen.stdin is not None
    alice.popen.stdin.write(b"a\n")
    alice.popen.stdin.flush()
    assert read_exactly(device.master, 2, 10) == b"a\n"  # alice holds the port
    bob = Console(tmp_path, certs, port, "uno", "--monitor", name="bob")
    consoles.append(bob)
    bob.wait_for(r"uno watching \(monitor access\)")
    assert bob.popen.stdin is not None
    bob.popen.stdin.write(b"from bob\n")
    bob.popen.stdin.flush()
    write_all(device.master, b"boot log\n")
    assert alice.read_stdout(9) == b"boot log\n"
    assert bob.read_stdout(9) == b"boot log\n"
    alice.popen.stdin.write(b"b\n")
    alice.popen.stdin.flush()
    assert read_exactly(device.master, 2, 10) == b"b\n"  # alice's bytes, none of bob's
    assert not select.select([device.master], [], [], 0.3)[0]
    bob.popen.stdin.close()
    assert bob.popen.wait(10) == 0, bob.stderr()


def test_ctrl_bracket_q_quits_while_the_hub_is_out_of_reach(
    tmp_path: Path, certs: Path, consoles: list[Console]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    console = Console(tmp_path, certs, closed, "uno", terminal=True)
    consoles.append(console)
    console.wait_for(r"could not reach|refused")
    console.type(b"\x1dq")
    assert console.popen.wait(10) == 0, console.stderr()
    assert termios.tcgetattr(console.slave) == console.before


def test_unknown_port_exits_2(
    tmp_path: Path, certs: Path, procs: list[Proc], consoles: list[Console], device: PtyDevice
) -> None:
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    console = Console(tmp_path, certs, port, "nope")
    consoles.append(console)
    assert console.popen.wait(10) == 2
    assert "comtunnel: error: the hub has no port named 'nope' (ports: uno)" in console.stderr()
    assert "Traceback" not in console.stderr()


def test_config_file(tmp_path: Path, certs: Path, procs: list[Proc], device: PtyDevice) -> None:
    """The connection options from a TOML file, as a LAVA device dictionary would use them."""
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    config = tmp_path / "console.toml"
    config.write_text(
        f'connect = "127.0.0.1:{port}"\ncerts = "{certs}"\nname = "alice"\n'
        "connect-timeout = 5\nescape = false\nlog = 'trace.log'\n"
    )
    result = subprocess.run(
        comtunnel("console", "uno", "--config", str(config)), input=b"hello\n", capture_output=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert read_exactly(device.master, 6, 5) == b"hello\n"
    assert b" out      6 hello\\n" in (tmp_path / "trace.log").read_bytes()  # relative to the file
    result = subprocess.run(comtunnel("console", "nope", "--config", str(config)), capture_output=True, timeout=20)
    assert result.returncode == 2
    assert b"no port named 'nope'" in result.stderr


def test_hub_unreachable_exits_4(tmp_path: Path, certs: Path, consoles: list[Console]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    started = time.monotonic()
    console = Console(tmp_path, certs, closed, "uno", "--connect-timeout", "1")
    consoles.append(console)
    assert console.popen.wait(10) == 4
    assert time.monotonic() - started < 8
    assert re.search(r"could not reach the hub at 127\.0\.0\.1:\d+ for 1 s: .*refused", console.stderr())


def test_tls_failure_exits_3(tmp_path: Path, certs: Path, other_certs: Path, consoles: list[Console]) -> None:
    with socket.socket() as sock:  # a hub of another CA: the handshake fails
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = subprocess.Popen(
            comtunnel("hub", "--listen", "127.0.0.1:0", "--certs", str(other_certs), "--port", "x=loop://"),
            stderr=subprocess.PIPE,
            env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)},
        )
    try:
        assert listener.stderr is not None
        port = re.search(rb"listening on 127\.0\.0\.1:(\d+)", listener.stderr.readline())
        assert port is not None
        console = Console(tmp_path, certs, port.group(1).decode(), "x", "--connect-timeout", "5")
        consoles.append(console)
        assert console.popen.wait(10) == 3
        assert "comtunnel: error: TLS with the hub failed" in console.stderr()
    finally:
        listener.send_signal(signal.SIGINT)
        listener.wait(10)


def test_dropped_connection_resumes(
    tmp_path: Path, certs: Path, procs: list[Proc], consoles: list[Console], device: PtyDevice
) -> None:
    """The connection is reset under the console: it says so, resumes, and bytes keep flowing in
    order both ways, including what was sent while it was down."""
    port = start_hub(tmp_path, certs, procs, "--port", f"uno={device.path}", "--control-socket", "none")
    with FaultProxy("127.0.0.1", int(port)) as proxy:
        console = Console(tmp_path, certs, proxy.port, "uno")
        consoles.append(console)
        assert console.popen.stdin is not None
        console.popen.stdin.write(b"before\n")
        console.popen.stdin.flush()
        assert read_exactly(device.master, 7, 10) == b"before\n"

        proxy.cut()
        console.wait_for(r"connection to the hub lost")
        write_all(device.master, b"while down\n")  # held by the hub for the resumed session
        console.popen.stdin.write(b"typed while down\n")
        console.popen.stdin.flush()
        console.wait_for(r"connection back: session resumed, nothing lost", timeout=15)
        assert read_exactly(device.master, 17, 10) == b"typed while down\n"
        assert console.read_stdout(11) == b"while down\n"

        write_all(device.master, ALL_BYTES)
        assert console.read_stdout(256) == ALL_BYTES
        console.popen.stdin.close()
        assert console.popen.wait(10) == 0, console.stderr()
