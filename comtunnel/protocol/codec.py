"""Length-prefixed framing: a 4-byte big-endian body length, then a msgpack body.

The length is checked against the maximum as soon as its 4 bytes arrive (unlike h2, which buffers
a whole body first), so a hostile length costs us nothing. A partial frame is never consumed: the
decoder keeps an offset into its buffer and compacts only between calls.
"""

from __future__ import annotations

import struct

from .errors import ErrorCode, RemoteProtocolError
from .frames import Frame, data_frame_header, decode_body, encode_body
from .limits import DEFAULT_MAX_FRAME, MAX_DATA_CHUNK

_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size


def encode_frame(frame: Frame) -> bytes:
    body = encode_body(frame)
    return _LENGTH.pack(len(body)) + body


def encode_data(out: list[bytes], channel: int, data: bytes | memoryview) -> None:
    """Append DATA frames carrying ``data`` to ``out``, split at the chunk limit; the payload is
    copied once, into its frame."""
    size = len(data)
    if size <= MAX_DATA_CHUNK:
        out.append(data_frame_header(channel, size))
        out.append(bytes(data))
        return
    view = memoryview(data)
    for start in range(0, size, MAX_DATA_CHUNK):
        chunk = view[start : start + MAX_DATA_CHUNK]
        out.append(data_frame_header(channel, len(chunk)))
        out.append(bytes(chunk))


class FrameDecoder:
    """Feed bytes with :meth:`feed`, take whole frames out with :meth:`frames`."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes and return every frame now complete. Raises only RemoteProtocolError.

        After an error the decoder is unusable: the stream has lost its framing.
        """
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        offset = 0
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - offset >= HEADER_SIZE:
                (length,) = _LENGTH.unpack_from(buf, offset)
                if length > self.max_frame:
                    raise RemoteProtocolError(
                        f"frame of {length} bytes exceeds the limit of {self.max_frame}",
                        ErrorCode.FRAME_TOO_LARGE,
                    )
                start = offset + HEADER_SIZE
                if end - start < length:
                    break
                frames.append(decode_body(view[start : start + length]))
                offset = start + length
        finally:
            view.release()
        if offset:
            del buf[:offset]
        return frames
