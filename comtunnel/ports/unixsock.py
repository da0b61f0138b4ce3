"""Gateways on a Unix socket instead of loopback TCP: the file system decides which local users may
drive the port (``--raw PORT=unix:PATH,mode=0660,group=dialout``).

A loopback TCP gateway is open to every account on the machine. A Unix socket carries its owner,
group and mode, so access can be given to a group. The peer's identity is known too
(SO_PEERCRED), and the log names the user who holds the port.

The socket is born with its final mode: it is made under a umask, so there is never a moment in
which others could connect. An existing path is replaced only when it is a socket nobody answers
on, which a hub that died leaves behind. A socket that answers is another process's and is
refused. A directory that others may write to is refused too, since they could swap the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from comtunnel.errors import PortUnavailable, UsageError


@dataclasses.dataclass(frozen=True)
class UnixEndpoint:
    path: Path
    mode: int = 0o600
    group: str | None = None

    def describe(self) -> str:
        return f"unix:{self.path}"


def parse_endpoint(text: str) -> UnixEndpoint:
    """``unix:PATH[,mode=0660][,group=NAME]`` (the part after ``PORT=``)."""
    path, *options = text.removeprefix("unix:").split(",")
    if not path:
        raise UsageError(f"expected unix:PATH[,mode=0660][,group=NAME], got {text!r}")
    mode, group = 0o600, None
    for option in options:
        key, _, value = option.partition("=")
        if key == "mode":
            try:
                mode = int(value, 8)
            except ValueError:
                raise UsageError(f"{text!r}: mode must be octal, like 0660") from None
            if mode & ~0o777 or mode & 0o111:
                raise UsageError(f"{text!r}: mode {value} must be read/write bits only, like 0660")
        elif key == "group":
            if not value:
                raise UsageError(f"{text!r}: group= needs a group name")
            group = value
        else:
            raise UsageError(f"{text!r}: unknown option {key!r} (use mode= and group=)")
    return UnixEndpoint(Path(path), mode, group)


async def listen(
    endpoint: UnixEndpoint, factory: Callable[[], asyncio.Protocol], name: str
) -> tuple[asyncio.Server, int]:
    """The server and its socket file's inode (for :func:`remove`)."""
    path = endpoint.path
    gid = _group_id(endpoint.group) if endpoint.group else -1
    _check_directory(path.parent, name)
    if os.path.lexists(path):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise PortUnavailable(f"cannot listen on {path} for {name}: it exists and is not a socket")
        if answers(path):
            raise PortUnavailable(f"cannot listen on {path} for {name}: another process is serving it")
        os.unlink(path)  # left behind by a process that died
    old_umask = os.umask(0o777 & ~endpoint.mode if gid < 0 else 0o777)  # with a group: closed until chowned
    try:
        server = await asyncio.get_running_loop().create_unix_server(factory, str(path))
    except OSError as exc:
        raise PortUnavailable(f"cannot listen on {path} for {name}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    try:
        if gid >= 0:
            os.chown(path, -1, gid)
        os.chmod(path, endpoint.mode)
    except OSError as exc:
        server.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise PortUnavailable(
            f"cannot give {path} group {endpoint.group} / mode {endpoint.mode:o}: {exc.strerror}"
        ) from None
    return server, os.lstat(path).st_ino


def remove(endpoint: UnixEndpoint, inode: int) -> None:
    """Remove our socket file, unless someone else's has taken its place."""
    with contextlib.suppress(OSError):
        if os.lstat(endpoint.path).st_ino == inode:
            os.unlink(endpoint.path)


def peer_of(transport: asyncio.BaseTransport) -> str:
    """The connected local user and process, from the kernel (SO_PEERCRED)."""
    sock = transport.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return "a local process"
    pid, uid, _ = struct.unpack("3i", raw)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return f"{user} (pid {pid})"


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"no group named {group!r}") from None


def _check_directory(directory: Path, name: str) -> None:
    try:
        st = directory.stat()
    except OSError as exc:
        raise PortUnavailable(f"cannot listen in {directory} for {name}: {exc.strerror}") from None
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UsageError(f"{directory} is writable by other users, who could replace the socket for {name}")


def answers(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket ``path`` (else it was left behind)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
