"""Hub and client topologies from the CLI alone: reverse dial (hub behind NAT) and several hubs."""

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
        assert hub.stop() == 130
        client.wait_for(r"connection to the hub lost")
        if attempt == 0:
            client.log.write_text("")  # look for the next session's lines only
    assert link.is_symlink(), "the virtual port survives the hub going away"


def test_listening_client_needs_the_hub_name(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    client = Proc(tmp_path, "client", "client", "--listen", "127.0.0.1:0", "--certs", str(certs), "--name", "alice")
    assert client.popen.wait(20) == 2
    assert "--hub-name" in client.text()


def test_one_client_uses_two_hubs_with_clashing_port_names(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    ports = []
    for name in ("a", "b"):
        hub = Proc(
            tmp_path, f"hub-{name}", "hub", "--listen", "127.0.0.1:0", "--certs", str(certs), "--port", "loop=loop://"
        )
        procs.append(hub)
        ports.append(hub.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    labels = [f"127.0.0.1:{p}" for p in ports]
    links = [tmp_path / "first", tmp_path / "second"]
    args = ["client", "--certs", str(certs), "--name", "alice"]
    for label, link in zip(labels, links, strict=True):
        args += ["--connect", label, "--link", f"{label}/loop={link}"]
    client = Proc(tmp_path, "client", *args)
    procs.append(client)
    for label in labels:
        client.wait_for(rf"connected to hub {label}")
    time.sleep(0.3)
    for link in links:
        assert _echo(link, link.name.encode() + b"\xff\x00") == link.name.encode() + b"\xff\x00"

    auto = Proc(
        tmp_path,
        "auto",
        "client",
        "--certs",
        str(certs),
        "--name",
        "bob",
        "--link-dir",
        str(tmp_path / "ports"),
        "--connect",
        labels[0],
        "--connect",
        labels[1],
    )
    procs.append(auto)
    deadline = time.monotonic() + 15
    while len(list((tmp_path / "ports").glob("*"))) < 2:
        assert time.monotonic() < deadline, auto.text()
        time.sleep(0.05)
    names = sorted(p.name for p in (tmp_path / "ports").iterdir())
    assert names in ([f"{labels[0]}-loop", "loop"], [f"{labels[1]}-loop", "loop"])  # the clash is qualified


def test_several_hubs_need_qualified_ports(certs: Path, tmp_path: Path, procs: list[Proc]) -> None:
    client = Proc(
        tmp_path,
        "client",
        "client",
        "--connect",
        "127.0.0.1:1",
        "--connect",
        "127.0.0.1:2",
        "--certs",
        str(certs),
        "--name",
        "alice",
        "--link",
        "loop=/tmp/x",
    )
    assert client.popen.wait(20) == 2
    assert "name the hub: HUB/PORT" in client.text()
