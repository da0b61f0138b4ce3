"""Just enough inotify (via ctypes: the stdlib has no binding) to see an application open and close a PTY.

One inotify instance serves every virtual port of a process: Linux allows a user 128 instances by
default (fs.inotify.max_user_instances) but 8192 watches per instance, so an instance per port
made a client with 128 links fail to start, and cost a file descriptor per port.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable
from pathlib import Path

IN_OPEN = 0x20
IN_CLOSE_WRITE = 0x08
IN_CLOSE_NOWRITE = 0x10
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


class Watches:
    """A non-blocking inotify fd watching many paths; :meth:`dispatch` hands each its event masks."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1 failed: {os.strerror(err)}")
        self.fd = fd
        self._callbacks: dict[int, Callable[[int], None]] = {}

    def __len__(self) -> int:
        return len(self._callbacks)

    def add(self, path: Path, mask: int, callback: Callable[[int], None]) -> int:
        """Watch ``path``; ``callback(mask)`` runs for each of its events. Returns the watch id."""
        wd = int(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path} failed: {os.strerror(err)}")
        self._callbacks[wd] = callback
        return wd

    def remove(self, wd: int) -> None:
        """Stop watching; events of ``wd`` still queued are dropped."""
        if self._callbacks.pop(wd, None) is not None:
            _libc.inotify_rm_watch(self.fd, wd)  # fails only if the path is gone, which removed it already

    def dispatch(self) -> None:
        """Read what is queued (one read; the loop calls again while more is) and run the callbacks."""
        try:
            buf = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(buf):
            wd, mask, _, name_len = _EVENT.unpack_from(buf, offset)
            offset += _EVENT.size + name_len
            callback = self._callbacks.get(wd)  # none for IN_IGNORED after a remove, or an overflow (-1)
            if callback is not None:
                callback(mask)

    def close(self) -> None:
        os.close(self.fd)
