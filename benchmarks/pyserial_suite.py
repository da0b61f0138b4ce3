"""pyserial's own loopback test suite through a comtunnel virtual port, next to a bare PTY.

    pip download --no-deps --no-binary :all: pyserial==3.5 && tar xzf pyserial-3.5.tar.gz
    python benchmarks/pyserial_suite.py pyserial-3.5/test

The loopback "device" is a PTY whose far end sends back everything it receives. First the suite
runs on that PTY directly (the reference), then on a client link -> hub (TLS on 127.0.0.1) -> a
second such PTY. Prints each run's unittest summary and exits non-zero if the runs differ.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path


class Loopback:
    """A PTY whose master echoes: the slave path is the loopback port."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    data = os.read(self.master, 65536)
                    view = memoryview(data)
                    while view:
                        select.select([], [self.master], [], 1)
                        view = view[os.write(self.master, view) :]
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_suite(test_dir: Path, port: str) -> tuple[str, int]:
    proc = subprocess.run(
        [sys.executable, "run_all_tests.py", port], cwd=test_dir, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    summary = [line for line in out.splitlines() if re.match(r"(Ran \d+ tests|OK|FAILED)", line)]
    failures = re.findall(r"^(?:FAIL|ERROR): (\S+)", out, re.M)
    text = " / ".join(summary) + (f"; failing: {', '.join(failures)}" if failures else "")
    return text, proc.returncode


@contextlib.contextmanager
def comtunnel_link(workdir: Path, device: str) -> Iterator[Path]:
    from comtunnel.certs import init_certs

    certs = workdir / "certs"
    init_certs(certs, ["127.0.0.1"], ["alice"])
    cmd = [sys.executable, "-m", "comtunnel"]
    hub_log, client_log = workdir / "hub.log", workdir / "client.log"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(workdir)}
    hub = subprocess.Popen(
        [*cmd, "hub", "--listen", "127.0.0.1:0", "--certs", str(certs), "--port", f"loop={device}"],
        stdout=hub_log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    procs = [hub]
    try:
        port = _wait_for(hub_log, r"listening on 127\.0\.0\.1:(\d+)")
        link = workdir / "loop"
        client = subprocess.Popen(
            [
                *cmd,
                "client",
                "--connect",
                f"127.0.0.1:{port}",
                "--certs",
                str(certs),
                "--name",
                "alice",
                "--link",
                f"loop={link}",
            ],
            stdout=client_log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        procs.append(client)
        _wait_for(client_log, r"loop: open on the hub")
        yield link
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(log: Path, pattern: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and (m := re.search(pattern, log.read_text(errors="replace"))):
            return m.group(1) if m.groups() else m.group(0)
        time.sleep(0.05)
    raise SystemExit(f"{pattern!r} not seen in {log}:\n{log.read_text(errors='replace')}")


def main() -> int:
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "run_all_tests.py").exists():
        print(__doc__)
        return 2
    test_dir = Path(sys.argv[1]).resolve()
    bare = Loopback()
    try:
        reference, ref_rc = run_suite(test_dir, bare.path)
    finally:
        bare.close()
    print(f"bare PTY loopback:          {reference}")
    device = Loopback()
    try:
        with tempfile.TemporaryDirectory() as tmp, comtunnel_link(Path(tmp), device.path) as link:
            through, rc = run_suite(test_dir, str(link))
    finally:
        device.close()
    print(f"comtunnel client link -> hub -> PTY loopback: {through}")
    return 0 if rc == ref_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
