"""The hub's ports as the sessions and the gateways share them: the specs, who holds each (the
I/O-free :class:`~comtunnel.policy.registry.PortRegistry`), how a device is opened, who watches.

Both tunnel sessions and hub gateways claim ports here, so each sees the other as "busy"; neither
knows the other exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from comtunnel.access import AccessPolicy
from comtunnel.policy.registry import Holder, Owner, PortRegistry
from comtunnel.ports.open import PortFactory, PortSpec, open_device
from comtunnel.ports.watch import WatchPort

#: How long a newcomer waits for a leaving holder's device to be closed.
RELEASE_WAIT = 3.0


class HubPorts:
    def __init__(
        self,
        specs: list[PortSpec],
        factory: PortFactory = open_device,
        access: AccessPolicy | None = None,
        grace: float = 0.0,
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.factory = factory
        self.registry = PortRegistry(access, grace)
        self.watchers: dict[str, set[WatchPort]] = {}  # port name -> monitors watching it

    @property
    def holders(self) -> dict[str, Holder]:
        return self.registry.holders

    def claim(self, name: str, client: str, owner: Owner | None = None) -> Holder:
        return self.registry.claim(name, client, owner, time.time())

    def release(self, name: str, holder: Holder | None) -> None:
        self.registry.release(name, holder)

    async def wait_released(self, holder: Holder, timeout: float = RELEASE_WAIT) -> None:
        """Until ``holder`` lets go of its port (or ``timeout``: the caller asks again either way)."""
        released = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not released.done():
                released.set_result(None)

        holder.on_release.append(wake)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released, timeout)
