"""UUCP lock files (``/var/lock/LCK..ttyUSB0``), so that comtunnel and minicom, picocom or a
ser2net built with UUCP locking never drive one device at the same time.

Those programs honour the lock and create it (Debian 12's ser2net does neither; TIOCEXCL, which
the device port sets as well, keeps it out unless it runs as root). The file holds the owner's pid as ten ASCII digits
and a newline. A lock whose pid is gone is stale, and is removed. A live one is refused, naming
the program. The device path is resolved first, so ``/dev/serial/by-id/...`` and ``/dev/ttyUSB0``
share one lock. Subdirectories of /dev become underscores: ``/dev/pts/3`` locks ``LCK..pts_3``.
A machine without a lock directory we may write to gets no lock. pyserial and ser2net behave the
same way there.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from comtunnel.errors import PortBusy

log = logging.getLogger(__name__)

LOCK_DIRS = (Path("/var/lock"), Path("/run/lock"))


def lock_name(device: str) -> str | None:
    """``LCK..NAME`` for a device under /dev, or None (a URL, or a path elsewhere)."""
    real = os.path.realpath(device)
    if not real.startswith("/dev/"):
        return None
    return "LCK.." + real[len("/dev/") :].replace("/", "_")


class UucpLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def acquire(cls, device: str, directories: tuple[Path, ...] = LOCK_DIRS) -> UucpLock | None:
        """Take the lock for ``device``; None when there is nowhere to put it. Raises PortBusy when
        a live process holds it."""
        name = lock_name(device)
        directory = next((d for d in directories if d.is_dir()), None)
        if name is None or directory is None:
            return None
        path = directory / name
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                owner = _owner(path)
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise PortBusy(f"{device} is in use by {_describe(owner)} (lock file {path})") from None
                log.info("removing the stale lock %s (pid %s is gone)", path, owner)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            except OSError as exc:  # not ours to write (a normal user without the lock group)
                log.debug("no UUCP lock for %s: %s", device, exc.strerror)
                return None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid():10d}\n")
            return cls(path)
        return None

    def release(self) -> None:
        """Remove the lock, if it is still ours."""
        if _owner(self.path) == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _owner(path: Path) -> int | None:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None  # garbage: treated as stale


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's, and alive
    return True


def _describe(pid: int) -> str:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"
    return f"{name} (pid {pid})"
