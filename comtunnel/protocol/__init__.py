"""The wire protocols, as pure state machines: bytes and events in, bytes and events out.

Nothing in this package touches sockets, asyncio or the clock; the adapters in
:mod:`comtunnel.aio` drive it.
"""
