"""Either side may listen: a hub behind NAT dials out to a listening client (CLI only, real TLS)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from support import Proc, open_app, read_exactly, write_all


def _echo(link: Path, message: bytes) -> bytes:
    fd = open_app(link)
    try:
        time.sleep(0.2)  # the client sees the open (inotify) and raises DTR/RTS
        write_all(fd, message)
        return read_exactly(fd, len(message), 10)
    finally:
        os.close(fd)


def test_hub_dials_a_listening_client_and_redials_after_a_restart(
    certs: Path, tmp_path: Path, procs: list[Proc]
) -> None:
    link = tmp_path / "loop"
    client = Proc(
        tmp_path,
        "client",
        "client",
        "--listen",
        "127.0.0.1:0",
        "--hub-name",
        "127.0.0.1",
        "--certs",
        str(certs),
        "--name",
        "alice",
        "--link",
        f"loop={link}",
    )
    procs.append(client)
    port = client.wait_for(r"listening for the hub on 127\.0\.0\.1:(\d+)").group(1)
    for attempt in range(2):  # the second hub process stands for a hub that rebooted
        hub = Proc(
            tmp_path,
            f"hub{attempt}",
            "hub",
            "--connect",
            f"127.0.0.1:{port}",
            "--certs",
            str(certs),
            "--port",
            "loop=loop://",
        )
        procs.append(hub)
        hub.wait_for(r"client alice connected from 127\.0\.0\.1")
        client.wait_for(r"loop: open on the hub", 15)
        assert _echo(link, b"reverse \x00\xff\x11\x13\r\n") == b"reverse \x00\xff\x11\x13\r\n"
        assert hub.stop() == 0
        client.wait_for(r"connection to the hub lost")
        if attempt == 0:
            client.log.write_text("")  # look for the next session's lines only
    assert link.is_symlink(), "the virtual port survives the hub going away"


def test_listening_client_needs_the_hub_name(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    client = Proc(tmp_path, "client", "client", "--listen", "127.0.0.1:0", "--certs", str(certs), "--name", "alice")
    assert client.popen.wait(20) == 2
    assert "--hub-name" in client.text()
