"""Just enough inotify (via ctypes: the stdlib has no binding) to see an application open and close a PTY."""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

IN_OPEN = 0x20
IN_CLOSE_WRITE = 0x08
IN_CLOSE_NOWRITE = 0x10
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


class Watch:
    """A non-blocking inotify fd watching one path; :meth:`read` returns the event masks."""

    def __init__(self, path: Path, mask: int) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {path} failed")
        self.fd = fd

    def read(self) -> list[int]:
        try:
            buf = os.read(self.fd, 4096)
        except BlockingIOError:
            return []
        masks = []
        offset = 0
        while offset + _EVENT.size <= len(buf):
            _, mask, _, name_len = _EVENT.unpack_from(buf, offset)
            masks.append(mask)
            offset += _EVENT.size + name_len
        return masks

    def close(self) -> None:
        os.close(self.fd)
