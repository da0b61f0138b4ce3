"""The hub's local control socket: `comtunnel status` asks it what is going on.

A unix stream socket, itself 0600 (born so: no window where others could connect), so the file
system decides who may look. Its directory is the hub's: one we create gets mode 0700; an existing
one is used as it is, never chmodded (``--control-socket /tmp/x.sock`` must not lock everyone out of
/tmp), and refused when other users may write to it, since they could replace the socket. One
JSON document per connection, no commands: nothing to authenticate, nothing to abuse. A socket
left behind by a dead hub is replaced; one whose hub still answers is a clear error (two hubs
would fight over it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from comtunnel.aio.metrics import Snapshot
from comtunnel.errors import PeerError, UsageError
from comtunnel.ports.unixsock import answers


def runtime_directory() -> Path:
    """$XDG_RUNTIME_DIR/comtunnel; else /run/comtunnel for root (a system service), /tmp/comtunnel-UID."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "comtunnel"
    if os.geteuid() == 0:
        return Path("/run/comtunnel")
    return Path(f"/tmp/comtunnel-{os.geteuid()}")


def default_socket_path() -> Path:
    """The hub's: hub.sock in :func:`runtime_directory`."""
    return runtime_directory() / "hub.sock"


def relay_socket_path() -> Path:
    """The relay's: relay.sock beside the hub's."""
    return runtime_directory() / "relay.sock"


def client_socket_path(pid: int | None = None) -> Path:
    """A client's: client-PID.sock beside the hub's, which `comtunnel list --local` reads."""
    return runtime_directory() / f"client-{pid if pid is not None else os.getpid()}.sock"


def client_sockets() -> list[Path]:
    return sorted(runtime_directory().glob("client-*.sock"))


class ControlServer:
    def __init__(self, path: Path, server: asyncio.AbstractServer, made: list[Path] | None = None) -> None:
        self.path = path
        self._server = server
        self._made = made or []  # directories we made for the socket, innermost first

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for directory in self._made:  # /tmp/comtunnel-UID and the like: not left behind
            try:
                directory.rmdir()
            except OSError:
                break


async def start_control_server(path: Path, snapshot: Snapshot) -> ControlServer:
    made = _private_directory(path.parent)
    if path.exists() or path.is_symlink():
        if answers(path):
            raise UsageError(f"another hub is running with control socket {path} (use --control-socket)")
        path.unlink()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(snapshot(), default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        server = await asyncio.start_unix_server(answer, path=str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return ControlServer(path, server, made)


def _private_directory(directory: Path) -> list[Path]:
    """Make ``directory`` (0700, with any missing parents), or check that an existing one is ours
    to use: owned by us or root, and writable by nobody else. Returns what it made, innermost first."""
    made: list[Path] = []
    missing = []
    d = directory
    while not d.exists() and d.parent != d:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot create {d} for the control socket: {exc.strerror}") from None
        os.chmod(d, 0o700)  # mkdir's mode passes through the umask
        made.insert(0, d)
    st = directory.stat()
    hint = "give --control-socket a path in a directory of your own"
    if st.st_uid not in (os.geteuid(), 0):  # e.g. a /tmp/comtunnel-UID someone else made first
        raise UsageError(f"{directory} belongs to another user; {hint}")
    if st.st_mode & 0o022:
        who = "every user" if st.st_mode & 0o002 else "its group"
        raise UsageError(f"{directory} is writable by {who}, who could replace the control socket; {hint}")
    return made


def fetch_status(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise PeerError(f"no hub is running here (no control socket {path})") from None
        except PermissionError:
            raise PeerError(f"no permission to use {path}: run as the hub's user") from None
        except OSError as exc:
            raise PeerError(f"no hub answers on {path}: {exc.strerror}") from None
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    try:
        result: dict[str, Any] = json.loads(data)
    except ValueError:
        raise PeerError(f"{path} did not answer with a status document") from None
    return result


def format_status(first: dict[str, Any], second: dict[str, Any] | None = None) -> str:
    """A readable table; with two snapshots, rates from their difference."""
    span = max(1e-3, second["now"] - first["now"]) if second else 0.0
    now = second or first
    if now.get("relay"):
        return _format_relay(first, second, span)
    before = {(s["client"], s["address"], c["port"]): c for s in first["sessions"] for c in s["channels"]}
    lines = [f"hub up {_duration(now['now'] - now['started'])}; {len(now['sessions'])} session(s)"]
    lines.append("")
    lines.append(f"{'PORT':<16} {'STATE':<32} {'SETTINGS':<16} {'DEVICE'}")
    for port in now["ports"]:
        state = port["state"] + (f" by {port['holder']}" if port.get("holder") else "")
        if port.get("monitors"):
            state += f", {port['monitors']} monitor(s)"
        lines.append(f"{port['name']:<16} {state:<32} {port.get('settings') or '-':<16} {port['device']}")
    lines.append("")
    head = f"{'CLIENT':<14} {'ADDRESS':<22} {'PORT':<12} {'ACCESS':<8}"
    lines.append(f"{head} {'TO DEVICE':>12} {'FROM DEVICE':>12} {'RATE IN/OUT':>16}")
    for session in now["sessions"]:
        where = session["address"] if session.get("connected", True) else "(disconnected)"
        if not session["channels"]:
            lines.append(f"{session['client']:<14} {where:<22} {'-':<12}")
        for ch in session["channels"]:
            rate = ""
            old = before.get((session["client"], session["address"], ch["port"]))
            if second is not None and old is not None:
                rin = (ch["bytes_to_device"] - old["bytes_to_device"]) / span
                rout = (ch["bytes_from_device"] - old["bytes_from_device"]) / span
                rate = f"{_bytes(rin)}/s {_bytes(rout)}/s"
            state = ch["access"] + (" gone" if ch.get("device_gone") else "")
            lines.append(
                f"{session['client']:<14} {where:<22} {ch['port']:<12} {state:<8} "
                f"{_bytes(ch['bytes_to_device']):>12} {_bytes(ch['bytes_from_device']):>12} {rate:>16}"
            )
    return "\n".join(lines)


def _format_relay(first: dict[str, Any], second: dict[str, Any] | None, span: float) -> str:
    """A relay's hubs, waiting clients and pairings, with rates from two snapshots."""
    now = second or first
    lines = [
        f"relay up {_duration(now['now'] - now['started'])}; {len(now['hubs'])} hub(s), "
        f"{len(now['pairings'])} pairing(s), {len(now['waiting'])} waiting"
    ]
    lines += ["", f"{'HUB':<32} {'ADDRESS':<22} {'REGISTERED'}"]
    for hub in now["hubs"]:
        lines.append(f"{', '.join(hub['names'])[:32]:<32} {hub['address']:<22} {_duration(hub['age'])} ago")
    lines += ["", f"{'CLIENT':<14} {'HUB':<24} {'TO HUB':>12} {'TO CLIENT':>12} {'RATE':>20}"]
    before = {(p["client"], p["hub"]): p for p in first["pairings"]}
    for pairing in now["pairings"]:
        rate = ""
        old = before.get((pairing["client"], pairing["hub"]))
        if second is not None and old is not None:
            up = (pairing["bytes_to_hub"] - old["bytes_to_hub"]) / span
            down = (pairing["bytes_to_client"] - old["bytes_to_client"]) / span
            rate = f"{_bytes(up)}/s {_bytes(down)}/s"
        lines.append(
            f"{pairing['client']:<14} {pairing['hub']:<24} {_bytes(pairing['bytes_to_hub']):>12} "
            f"{_bytes(pairing['bytes_to_client']):>12} {rate:>20}"
        )
    if now.get("refused"):
        lines += ["", "refused: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(now["refused"].items()))]
    return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
