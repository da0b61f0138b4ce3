"""Resumption: a session's channels carried from a dead connection to the next, nothing lost or
doubled (docs/wire-format.md, "Resumption").

Each side names, per channel, the offset up to which it received the peer's bytes and the offset up
to which it consumed them. Each side then checks the peer's claims against what it sent (a claim
beyond that, or behind what it still holds, is a protocol error: the session cannot be repaired),
trims what the peer surely has, and resends the rest with each kept line operation in its place.

The functions here take the channels and a list of encoded frames to append to; the connection
(:mod:`mux`) owns the frames' order on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import frames as fr
from .channel import Channel, ChannelInput, ChannelState
from .codec import encode_data, encode_frame
from .errors import ErrorCode, RemoteProtocolError

Offsets = tuple[int, int, int]  # channel id, received, consumed


def carry_over(channels: Iterable[Channel]) -> tuple[list[Channel], list[Offsets]]:
    """Client: the channels of a dead connection that a RESUME may keep, and their offsets."""
    carried: list[Channel] = []
    offsets: list[Offsets] = []
    for ch in channels:
        ch.apply(ChannelInput.SUSPEND)
        if ch.state is not ChannelState.RESUMING:
            continue
        ch.held_credit = 0  # the RESUME tells the hub exactly what we consumed
        carried.append(ch)
        offsets.append((ch.id, *ch.recv.resync()))
    return carried, offsets


def accept(old: Iterable[Channel], peer: list[Offsets], out: list[bytes]) -> tuple[list[Channel], list[int]]:
    """Hub: keep the old channels the client's RESUME names; returns them and the ids of the rest.

    Appends RESUMED and what the client lacks to ``out``. Every claim is checked before anything
    changes, so a refused resumption leaves the old session as it was.
    """
    offsets = {cid: (received, consumed) for cid, received, consumed in peer}
    old = list(old)
    for ch in old:
        if ch.state is ChannelState.OPEN and ch.id in offsets:
            check(ch, *offsets[ch.id])
    kept: list[Channel] = []
    dropped: list[int] = []
    for ch in old:
        if ch.state is not ChannelState.OPEN or ch.id not in offsets:
            dropped.append(ch.id)
            continue
        resync(ch, *offsets[ch.id])
        kept.append(ch)
    out.append(encode_frame(fr.Resumed([(ch.id, *ch.recv.resync()) for ch in kept])))
    for ch in kept:
        replay(ch, out)
        announce_size(ch, out)
    return kept, dropped


def resumed(channels: dict[int, Channel], answer: list[Offsets], out: list[bytes]) -> tuple[list[int], dict[int, int]]:
    """Client: apply the hub's RESUMED; returns the ids kept, and for each channel it left out the
    bytes we had sent that it never confirmed (what the loss cost)."""
    named: set[int] = set()
    for cid, received, consumed in answer:
        ch = channels.get(cid)
        if ch is None or cid in named:
            raise RemoteProtocolError(f"RESUMED names channel {cid}, which we did not resume")
        if ch.state is not ChannelState.RESUMING:
            ch.apply(ChannelInput.RESUMED)  # raises: a channel we did not carry over
        check(ch, received, consumed)
        named.add(cid)
    kept: list[int] = []
    for cid, received, consumed in answer:
        ch = channels[cid]
        resync(ch, received, consumed)
        ch.apply(ChannelInput.RESUMED)
        kept.append(cid)
        replay(ch, out)
        if ch.held_credit:
            out.append(encode_frame(fr.WindowUpdate(cid, ch.held_credit)))
            ch.held_credit = 0
        announce_size(ch, out)
    return kept, drop_unresumed(channels)


def drop_unresumed(channels: dict[int, Channel]) -> dict[int, int]:
    """Client: forget the channels still waiting for a resumption; returns their unconfirmed bytes."""
    lost = {cid: len(ch.replay) for cid, ch in channels.items() if ch.state is ChannelState.RESUMING}
    for cid in lost:
        channels.pop(cid).apply(ChannelInput.NOT_RESUMED)
    return lost


def check(ch: Channel, received: int, consumed: int) -> None:
    """Raise unless the peer's offsets fit what we sent and still hold."""
    if received > ch.send.sent:
        raise RemoteProtocolError(f"channel {ch.id}: peer claims {received} bytes, we sent {ch.send.sent}")
    if received < ch.replay.start:
        raise RemoteProtocolError(f"channel {ch.id}: cannot resume from {received}, we hold {ch.replay.start}")
    if not ch.send.acked <= consumed <= received:
        raise RemoteProtocolError(
            f"channel {ch.id}: peer claims to have consumed {consumed} (acknowledged {ch.send.acked}, "
            f"received {received})",
            ErrorCode.FLOW_CONTROL_ERROR,
        )


def resync(ch: Channel, received: int, consumed: int) -> None:
    """The peer holds our bytes up to ``received`` and consumed up to ``consumed``."""
    check(ch, received, consumed)
    ch.send.resync(consumed)
    ch.replay.trim(received)
    trim_operations(ch, received)


def replay(ch: Channel, out: list[bytes]) -> None:
    """Our bytes from the peer's received offset, each kept line operation in its place among them
    (the peer skips one it already had, by its sequence number)."""
    data = ch.replay.unacknowledged(ch.replay.start)
    position = ch.replay.start
    for operation in ch.operations:
        cut = operation.offset - position
        if cut > 0:
            encode_data(out, ch.id, data[:cut])
            data, position = data[cut:], operation.offset
        out.append(encode_frame(operation))
    if len(data):
        encode_data(out, ch.id, data)


def announce_size(ch: Channel, out: list[bytes]) -> None:
    """Our resized receive window again, in case the resize was lost with the connection."""
    if ch.recv.resized:
        out.append(encode_frame(fr.WindowUpdate(ch.id, 0, ch.recv.size)))


def trim_operations(ch: Channel, offset: int) -> None:
    """The peer holds every byte before ``offset``, so every operation placed before one of them."""
    operations = ch.operations
    while operations and operations[0].offset < offset:
        operations.popleft()
