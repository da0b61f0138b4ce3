"""Framing: u32 big-endian length + msgpack body, decoded the same whatever the chunking.

Invariants checked: any split of a valid stream yields the same frames; a length above the limit
is refused the moment its 4 bytes arrive; garbage raises RemoteProtocolError and nothing else;
the buffer never holds more than one incomplete frame.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comtunnel.protocol import frames as fr
from comtunnel.protocol.codec import HEADER_SIZE, FrameDecoder, encode_body, encode_frame
from comtunnel.protocol.errors import ErrorCode, RemoteProtocolError
from comtunnel.protocol.limits import DEFAULT_MAX_FRAME
from comtunnel.protocol.settings import ControlRequest, ModemLines, PortSettings

frame_st = st.one_of(
    st.builds(fr.Data, st.integers(0, 2**32 - 1), st.binary(max_size=3000)),
    st.builds(fr.WindowUpdate, st.integers(0, 2**32 - 1), st.integers(0, 1 << 30)),
    st.builds(fr.Ping, st.integers(0, 2**64 - 1)),
    st.builds(fr.Close, st.integers(0, 99), st.sampled_from(list(ErrorCode)), st.text(max_size=40)),
    st.builds(fr.Modem, st.integers(0, 99), st.sampled_from([ModemLines.CTS, ModemLines.NONE, ModemLines(0xF0)])),
    st.builds(
        fr.Hello, st.integers(0, 5), st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1), max_size=3)
    ),
    st.just(fr.Open(1, "gps", PortSettings(4800), ControlRequest(dtr=False), 4096)),
    st.just(fr.Ports([{"name": "a"}, {"name": "b", "state": "free"}])),
)


def stream_of(frames: Sequence[fr.Frame]) -> bytes:
    return b"".join(encode_frame(f) for f in frames)


def feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list[fr.Frame]:
    out: list[fr.Frame] = []
    bounds = [0, *sorted(cuts), len(stream)]
    for start, end in itertools.pairwise(bounds):
        out += decoder.feed(stream[start:end])
        assert decoder.buffered < HEADER_SIZE + decoder.max_frame
    return out


def test_encode_frame_is_length_prefix_and_body() -> None:
    frame = fr.Data(7, b"hello")
    body = encode_body(frame)
    assert encode_frame(frame) == len(body).to_bytes(4, "big") + body
    assert body == msgpack.packb([5, 7, b"hello"], use_bin_type=True)


@given(st.lists(frame_st, min_size=1, max_size=8), st.data())
@settings(max_examples=150, deadline=None)
def test_any_split_decodes_to_the_same_frames(frames: list[fr.Frame], data: st.DataObject) -> None:
    stream = stream_of(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    decoder = FrameDecoder()
    assert feed_in_pieces(decoder, stream, cuts) == frames
    assert decoder.buffered == 0


@given(st.lists(frame_st, min_size=1, max_size=4))
@settings(max_examples=20, deadline=None)
def test_whole_and_byte_by_byte_agree(frames: list[fr.Frame]) -> None:
    stream = stream_of(frames)
    assert FrameDecoder().feed(stream) == frames
    decoder = FrameDecoder()
    assert feed_in_pieces(decoder, stream, list(range(1, len(stream)))) == frames


def test_frames_come_out_exactly_when_their_last_byte_arrives() -> None:
    frames = [fr.Ping(1), fr.Data(2, bytes(range(256))), fr.Pong(3)]
    ends = []
    total = 0
    for f in frames:
        total += len(encode_frame(f))
        ends.append(total)
    stream = stream_of(frames)
    decoder = FrameDecoder()
    for i in range(len(stream)):
        got = decoder.feed(stream[i : i + 1])
        if i + 1 in ends:
            assert got == [frames[ends.index(i + 1)]]
        else:
            assert got == []
    assert decoder.buffered == 0


def test_truncated_stream_is_held_not_rejected() -> None:
    stream = stream_of([fr.Ping(1), fr.Data(3, b"x" * 100)])
    decoder = FrameDecoder()
    assert decoder.feed(stream[:-1]) == [fr.Ping(1)]
    assert decoder.buffered == len(encode_frame(fr.Data(3, b"x" * 100))) - 1
    assert decoder.feed(stream[-1:]) == [fr.Data(3, b"x" * 100)]


def test_empty_feed_is_harmless() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.buffered == 0


@pytest.mark.parametrize("limit", [16, 1024, DEFAULT_MAX_FRAME])
def test_oversized_length_is_rejected_as_soon_as_the_header_arrives(limit: int) -> None:
    decoder = FrameDecoder(max_frame=limit)
    header = (limit + 1).to_bytes(4, "big")
    assert decoder.feed(header[:3]) == []  # three bytes: not yet a length
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(header[3:])  # the fourth byte: refused before any body byte
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert f"{limit + 1} bytes exceeds the limit of {limit}" in str(info.value)
    assert decoder.buffered == HEADER_SIZE


def test_huge_length_after_valid_frames_is_rejected_without_waiting() -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(encode_frame(fr.Ping(1)) + b"\xff\xff\xff\xff")
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    frame = fr.Data(1, b"q" * 1000)
    limit = len(encode_body(frame))
    assert FrameDecoder(max_frame=limit).feed(encode_frame(frame)) == [frame]
    with pytest.raises(RemoteProtocolError):
        FrameDecoder(max_frame=limit - 1).feed(encode_frame(frame))


def test_a_large_body_is_buffered_but_never_more_than_one_frame() -> None:
    limit = 4096
    decoder = FrameDecoder(max_frame=limit)
    frame = fr.Data(1, b"z" * (limit - 10))
    stream = encode_frame(frame) * 3
    out: list[fr.Frame] = []
    for start in range(0, len(stream), 97):
        out += decoder.feed(stream[start : start + 97])
        assert decoder.buffered < HEADER_SIZE + limit
    assert out == [frame] * 3


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="zero-length body"),
        pytest.param(b"\xc1", id="reserved msgpack byte"),
        pytest.param(b"\x92\x0e", id="array shorter than it says"),
        pytest.param(b"\x92\x0e\x01\x02", id="trailing byte inside the frame"),
        pytest.param(msgpack.packb([42, 1]), id="unknown frame type"),
        pytest.param(msgpack.packb([5, 1, "text"]), id="wrong field type"),
        pytest.param(msgpack.packb([5, 1, b"x", 0]), id="extra field"),
        pytest.param(msgpack.packb([8, 1, {"baud": 0}]), id="bad settings"),
    ],
)
def test_malformed_frame_inside_a_valid_length(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


def test_a_short_length_splits_a_frame_and_the_rest_is_garbage() -> None:
    body = encode_body(fr.Ping(5))
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed((len(body) - 1).to_bytes(4, "big") + body)


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=6))
@settings(max_examples=300, deadline=None)
def test_garbage_raises_only_remote_protocol_error_and_memory_stays_bounded(garbage: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame=1024)
    try:
        feed_in_pieces(decoder, garbage, [c for c in cuts if c <= len(garbage)])
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.PROTOCOL_ERROR, ErrorCode.FRAME_TOO_LARGE)


@given(st.lists(frame_st, min_size=1, max_size=4), st.integers(0, 1 << 20), st.data())
@settings(max_examples=150, deadline=None)
def test_truncation_or_corruption_of_a_valid_stream(frames: list[fr.Frame], seed: int, data: st.DataObject) -> None:
    stream = bytearray(stream_of(frames))
    index = seed % len(stream)
    if data.draw(st.booleans()):
        del stream[index:]
    else:
        stream[index] ^= data.draw(st.integers(1, 255))
    decoder = FrameDecoder(max_frame=8192)
    try:
        out = decoder.feed(bytes(stream))
    except RemoteProtocolError:
        return
    assert all(isinstance(f, fr.Frame) for f in out)
    assert decoder.buffered < HEADER_SIZE + 8192


def test_many_small_frames_in_one_feed_are_linear() -> None:
    """50k frames in one chunk: the decoder walks an offset and compacts once, so this is quick."""
    frames = [fr.Data(1, b"x")] * 50_000
    stream = stream_of(frames)
    start = time.perf_counter()
    out = FrameDecoder().feed(stream)
    elapsed = time.perf_counter() - start
    assert len(out) == 50_000 and out[-1] == fr.Data(1, b"x")
    assert elapsed < 5.0


# --- the DATA fast path: read without msgpack, judged by the strict decoder otherwise -------------------


def _frame_of(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def _decoded(body: bytes) -> fr.Frame | str:
    try:
        (frame,) = FrameDecoder().feed(_frame_of(body))
    except RemoteProtocolError as exc:
        return f"error: {exc}"
    return frame


def _general(body: bytes) -> fr.Frame | str:
    from comtunnel.protocol.codec import decode_body

    try:
        return decode_body(body)
    except RemoteProtocolError as exc:
        return f"error: {exc}"


@given(
    channel=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=300),
    channel_form=st.sampled_from(["min", "u8", "u16", "u32"]),
    bin_form=st.sampled_from(["min", "b8", "b16", "b32"]),
)
def test_data_in_any_msgpack_form_decodes_as_the_strict_decoder_does(
    channel: int, payload: bytes, channel_form: str, bin_form: str
) -> None:
    forms = {
        "min": msgpack.packb(channel),
        "u8": b"\xcc" + channel.to_bytes(1, "big") if channel < 0x100 else msgpack.packb(channel),
        "u16": b"\xcd" + channel.to_bytes(2, "big"),
        "u32": b"\xce" + channel.to_bytes(4, "big"),
    }
    size = len(payload)
    bins = {
        "min": msgpack.packb(payload, use_bin_type=True),
        "b8": b"\xc4" + size.to_bytes(1, "big") if size < 0x100 else msgpack.packb(payload, use_bin_type=True),
        "b16": b"\xc5" + size.to_bytes(2, "big"),
        "b32": b"\xc6" + size.to_bytes(4, "big"),
    }
    encoded_payload = bins["min"] if bin_form == "min" else bins[bin_form] + payload
    body = b"\x93\x05" + forms[channel_form] + encoded_payload
    assert _decoded(body) == _general(body) == fr.Data(channel, payload)


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_data_lookalikes_are_judged_by_the_strict_decoder(head: bytes, tail: bytes) -> None:
    """Bodies that start like DATA but are anything else: the same frame or the same error."""
    body = b"\x93\x05" + head + tail
    assert _decoded(body) == _general(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\x93\x05\x01\xc4\x03ab",  # payload shorter than its length
        b"\x93\x05\x01\xc4\x01ab",  # longer: a trailing byte in the frame
        b"\x93\x05\x01\xa2ab",  # a str, not bin
        b"\x94\x05\x01\xc4\x01a\x00",  # four fields
        b"\x93\x05\xff\xc4\x01a",  # a negative channel
        b"\x93\x05\xcc",  # cut inside the channel
        b"\x93\x05\x01\xc5\x00",  # cut inside the length
    ],
)
def test_malformed_data_is_rejected_as_before(body: bytes) -> None:
    result = _decoded(body)
    assert isinstance(result, str) and result.startswith("error:")
    assert result == _general(body)
