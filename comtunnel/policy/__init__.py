"""The hub's and the client's decisions, I/O-free: who holds a port, what a newcomer is told,
when a session's grace or a handshake runs out, how long to wait before dialling again.

Time comes in as ``now`` and leaves as deadlines, as in :mod:`comtunnel.protocol`; the asyncio
shell (:mod:`comtunnel.aio`) only arms one timer per deadline and calls back in.
"""
