"""How the CLI ends (issue 14): a taken --listen address, Ctrl-C in every state, a hub out of reach.

Everything runs through the real `comtunnel` executable; each test kills only what it started.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Proc, comtunnel, start_hub

from comtunnel.certs import init_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("exit-certs")
    init_certs(directory, ["127.0.0.1"], ["alice"])
    return directory


@pytest.fixture
def taken() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that someone is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class SilentServer:
    """A plain TCP server that accepts and never answers: a TLS handshake against it stalls."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def client_args(certs: Path, port: int, *more: str) -> list[str]:
    return ["client", "--connect", f"127.0.0.1:{port}", "--certs", str(certs), "--name", "alice", *more]


def interrupt(proc: Proc, sig: signal.Signals = signal.SIGINT) -> tuple[int, float]:
    """Send ``sig`` to a process we started; its exit code and how long it took to exit."""
    start = time.monotonic()
    proc.popen.send_signal(sig)
    try:
        code = proc.popen.wait(5)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait()
        raise AssertionError(f"still running 5 s after {sig.name}:\n{proc.text()}") from None
    return code, time.monotonic() - start


# --- a taken --listen address -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_hub_listen_on_a_taken_port_is_one_line(certs: Path, taken: int) -> None:
    args = ["hub", "--listen", f"127.0.0.1:{taken}", "--certs", str(certs), "--port", "a=loop://"]
    result = subprocess.run(comtunnel(*args, "--control-socket", "none"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"comtunnel: error: cannot listen on 127.0.0.1:{taken} for clients (--listen): Address already in use"
    ], result.stderr


@pytest.mark.timeout(60)
def test_client_listen_on_a_taken_port_is_one_line(certs: Path, taken: int) -> None:
    args = ["client", "--listen", f"127.0.0.1:{taken}", "--hub-name", "127.0.0.1", "--certs", str(certs)]
    result = subprocess.run(comtunnel(*args, "--name", "alice"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        f"comtunnel: error: cannot listen on 127.0.0.1:{taken} for the hub (--listen): Address already in use"
        in result.stderr.splitlines()
    ), result.stderr


@pytest.mark.timeout(60)
def test_listen_without_a_host_says_all_interfaces(tmp_path: Path, certs: Path, closed_port: int) -> None:
    hub = Proc(tmp_path, "hub", "hub", "--listen", str(closed_port), "--certs", str(certs), "--port", "a=loop://")
    try:
        hub.wait_for(rf"hub listening on all interfaces \(0\.0\.0\.0:{closed_port}\) with ports a")
    finally:
        hub.stop()
    client = Proc(
        tmp_path,
        "client",
        "client",
        "--listen",
        str(closed_port),
        "--hub-name",
        "127.0.0.1",
        "--certs",
        str(certs),
        "--name",
        "alice",
    )
    try:
        client.wait_for(rf"client listening for the hub on all interfaces \(0\.0\.0\.0:{closed_port}\)")
    finally:
        client.stop()


# --- Ctrl-C in every state ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sigint_during_a_stalled_tls_handshake(tmp_path: Path, certs: Path) -> None:
    silent = SilentServer()
    client = Proc(tmp_path, "client", *client_args(certs, silent.port))
    try:
        deadline = time.monotonic() + 10
        while not silent.accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert silent.accepted, client.text()
        time.sleep(0.3)  # well into the handshake, which the server never answers
        code, took = interrupt(client)
    finally:
        client.stop()
        silent.close()
    assert code == 130, client.text()
    assert took < 1.0, f"{took:.2f} s\n{client.text()}"
    assert "Traceback" not in client.text()


@pytest.mark.timeout(60)
def test_sigint_while_reconnecting(tmp_path: Path, certs: Path, closed_port: int) -> None:
    client = Proc(tmp_path, "client", *client_args(certs, closed_port))
    try:
        client.wait_for(r"connection refused")
        time.sleep(1.5)  # the backoff has grown past a second by now
        code, took = interrupt(client)
    finally:
        client.stop()
    assert code == 130, client.text()
    assert took < 1.0, f"{took:.2f} s\n{client.text()}"
    assert "Traceback" not in client.text()


@pytest.mark.timeout(60)
def test_sigint_and_sigterm_to_a_running_hub(tmp_path: Path, certs: Path) -> None:
    procs: list[Proc] = []
    try:
        start_hub(tmp_path, certs, procs, "--port", "a=loop://")
        code, took = interrupt(procs[0])
        assert code == 130 and took < 1.0, (code, took, procs[0].text())
        start_hub(tmp_path, certs, procs, "--port", "a=loop://", name="hub2")
        code, took = interrupt(procs[1], signal.SIGTERM)
        assert code == 0 and took < 1.0, (code, took, procs[1].text())
    finally:
        for proc in procs:
            proc.stop()
    assert all("Traceback" not in proc.text() for proc in procs)


@pytest.mark.timeout(60)
def test_sigint_to_a_connected_client(tmp_path: Path, certs: Path) -> None:
    procs: list[Proc] = []
    try:
        port = start_hub(tmp_path, certs, procs, "--port", "a=loop://")
        client = Proc(tmp_path, "client", *client_args(certs, int(port), "--link", f"a={tmp_path / 'a'}"))
        procs.append(client)
        client.wait_for(r"a: open on the hub")
        code, took = interrupt(client)
        assert code == 130 and took < 1.0, (code, took, client.text())
        assert not (tmp_path / "a").exists()
    finally:
        for proc in procs:
            proc.stop()


# --- a hub out of reach -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_connect_timeout_gives_up_with_exit_4(certs: Path, closed_port: int) -> None:
    start = time.monotonic()
    result = subprocess.run(
        comtunnel("-vv", *client_args(certs, closed_port, "--connect-timeout", "1")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - start
    assert result.returncode == 4, result.stderr
    assert took < 4.0, took  # ~1 s, plus the interpreter's start
    assert "Traceback" not in result.stderr
    assert (
        f"comtunnel: error: could not reach the hub at 127.0.0.1:{closed_port} for 1 s: connection refused"
        in result.stderr
    ), result.stderr
    # several attempts, one warning: the first failure, not every retry
    attempts = re.findall(r"DEBUG .*attempt \d+: connection refused", result.stderr)
    warnings = re.findall(r"WARNING .*connection refused", result.stderr)
    assert len(attempts) >= 3, result.stderr
    assert len(warnings) == 1, result.stderr


@pytest.mark.timeout(60)
def test_a_new_reason_is_logged_again(tmp_path: Path, certs: Path, closed_port: int) -> None:
    """Refused for a while, then a server that accepts and resets: two warnings, not one per retry."""
    client = Proc(tmp_path, "client", *client_args(certs, closed_port, "--connect-timeout", "3"))
    server = socket.socket()
    try:
        client.wait_for(r"connection refused")
        time.sleep(0.8)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", closed_port))
        server.listen()
        server.settimeout(0.1)
        deadline = time.monotonic() + 10
        while client.popen.poll() is None and time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # always a reset (a plain close is a FIN or a reset, by timing)
        code = client.popen.wait(5)
    finally:
        client.stop()
        server.close()
    text = client.text()
    assert code == 4, text
    warnings = [line for line in text.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, text
    assert "connection refused" in warnings[0] and "connection refused" not in warnings[1], text
    assert f"could not reach the hub at 127.0.0.1:{closed_port} for 3 s" in text


@pytest.mark.timeout(60)
def test_list_connect_timeout(certs: Path) -> None:
    silent = SilentServer()
    try:
        start = time.monotonic()
        result = subprocess.run(
            comtunnel(
                "list",
                "--connect",
                f"127.0.0.1:{silent.port}",
                "--certs",
                str(certs),
                "--name",
                "alice",
                "--connect-timeout",
                "1",
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - start
    finally:
        silent.close()
    assert result.returncode == 4, result.stderr
    assert took < 4.0, took
    assert f"could not reach the hub at 127.0.0.1:{silent.port} for 1 s: no answer" in result.stderr


@pytest.mark.timeout(60)
def test_ctrl_c_typed_on_a_terminal(certs: Path) -> None:
    """The keyboard's Ctrl-C, through a real pseudo-terminal: the terminal driver sends SIGINT to the
    foreground process, which is the client, stuck in a handshake nobody answers."""
    import os
    import pty
    import select

    silent = SilentServer()
    pid, master = pty.fork()
    if pid == 0:  # the child: comtunnel on the terminal, as a person would run it
        try:
            os.execv(comtunnel()[0], [*comtunnel(*client_args(certs, silent.port))])
        finally:
            os._exit(127)  # never back into the test runner
    output = b""
    try:
        deadline = time.monotonic() + 10
        while not silent.accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        os.write(master, b"\x03")
        start = time.monotonic()
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > 5:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("Ctrl-C did not stop the client within 5 s")
            if select.select([master], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):
                    output += os.read(master, 65536)
        took = time.monotonic() - start
    finally:
        silent.close()
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 130, output.decode(errors="replace")
    assert took < 1.0 and b"Traceback" not in output
