"""Event loop choice: uvloop where it exists (not on Windows), asyncio's own elsewhere."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    if use_uvloop and sys.platform != "win32":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            result: T = uvloop.run(main)
            return result
    return asyncio.run(main)
