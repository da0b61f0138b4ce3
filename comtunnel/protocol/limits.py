"""Default sizes and bounds of the tunnel protocol: knobs of a connection, not constants of the wire."""

PROTOCOL_VERSION = 1
#: Largest frame body we accept. The 4-byte length prefix is checked against it before buffering.
DEFAULT_MAX_FRAME = 1 << 20
#: Largest DATA payload we put in one frame; larger writes are split.
MAX_DATA_CHUNK = 64 * 1024
#: Credit each side grants per channel: bytes in flight before the receiver must acknowledge.
DEFAULT_WINDOW = 256 * 1024
#: Largest window a peer may grant (keeps arithmetic and memory bounded).
MAX_WINDOW = 1 << 30
DEFAULT_MAX_CHANNELS = 256
MAX_PORT_NAME = 256
MAX_MESSAGE = 1024
