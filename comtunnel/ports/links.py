"""The symlinks behind which virtual ports live, made and removed so the client never harms what
is not its own.

A link is only ever made at the path the user gave (or under --link-dir for a port name that passed
:func:`comtunnel.specs.port_name_problem`). We replace a path only when it is a symlink to a PTY that
is gone (a client that died left it); a dangling link elsewhere (to an unplugged /dev/ttyUSB0) is
someone's, and refused. A path that is a file, a directory, or a live link (another
client's PTY, a real device) is refused, with a message that names the process holding the target.
At exit we remove a link only while it still points at our PTY, and a directory only if we made it
and it is empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from comtunnel.errors import UsageError

log = logging.getLogger(__name__)

_made: set[Path] = set()  # directories this process made for links: removed when the last link goes


def check_free(link: Path) -> str | None:
    """Raise unless we may make ``link``; returns the stale target it has now, if any."""
    try:
        st = os.lstat(link)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot create the link {link}: {exc.strerror}") from None
    if not stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{link} exists and is not a symlink; refusing to replace it")
    current = os.readlink(link)
    if os.path.exists(link):
        raise UsageError(f"{link} already points at {current}{_held_by(link)}; refusing to take it over")
    if not current.startswith("/dev/pts/"):  # not a virtual port's: someone's link to an unplugged device
        raise UsageError(f"{link} points at {current}, which does not exist now; remove it if it is not needed")
    return current


def make_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target``, making its missing directories."""
    stale = check_free(link)
    if stale is not None:
        log.info("replacing the stale link %s -> %s", link, stale)
    made = _make_parents(link.parent)
    _made.update(made)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(tmp).st_mode):  # ours from an earlier attempt of this process
                os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _remove_dirs(link.parent)
        raise UsageError(f"cannot create the link {link}: {exc.strerror}") from None


def remove_link(link: Path, target: str) -> None:
    """Remove ``link`` if it still points at ``target``, then the directories we made for links,
    once empty."""
    with contextlib.suppress(OSError):
        if os.readlink(link) == target:
            os.unlink(link)
    _remove_dirs(link.parent)


def _remove_dirs(directory: Path) -> None:
    while directory in _made:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (another link, someone else's files): keep it and its parents
        _made.discard(directory)
        directory = directory.parent


def holders(path: str) -> list[tuple[int, str]]:
    """Processes (pid, command name) other than this one with ``path`` open, as far as /proc shows."""
    found = []
    me = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                fds = os.listdir(f"/proc/{entry.name}/fd")
                if any(_readlink(f"/proc/{entry.name}/fd/{fd}") == path for fd in fds):
                    with open(f"/proc/{entry.name}/comm") as comm:
                        found.append((int(entry.name), comm.read().strip()))
            except OSError:
                continue  # gone meanwhile, or not ours to look at
    return found


def _held_by(link: Path) -> str:
    target = os.path.realpath(link)
    who = holders(target)
    if not who:
        return ""
    names = ", ".join(f"{name} (pid {pid})" for pid, name in who[:3])
    return f", which {names} {'has' if len(who) == 1 else 'have'} open"


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _make_parents(directory: Path) -> list[Path]:
    missing = []
    while not directory.exists() and directory.parent != directory:
        missing.append(directory)
        directory = directory.parent
    made: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to remove
        except OSError as exc:
            _made.update(made)
            _remove_dirs(d.parent)
            raise UsageError(f"cannot create the directory {d}: {exc.strerror}") from None
        made.append(d)
    return made
