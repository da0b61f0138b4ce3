"""Default sizes and bounds of the tunnel protocol: knobs of a connection, not constants of the wire."""

#: 3: line operations carry their sequence number and byte offset (ordering across resumption).
PROTOCOL_VERSION = 3
#: Largest frame body we accept. The 4-byte length prefix is checked against it before buffering.
DEFAULT_MAX_FRAME = 1 << 20
#: The hub's, smaller: a client sends at most DATA (65,548 bytes) or a RESUME naming its channels.
HUB_MAX_FRAME = 128 * 1024
#: Largest DATA payload we put in one frame; larger writes are split.
MAX_DATA_CHUNK = 64 * 1024
#: Credit each side grants per channel: bytes in flight before the receiver must acknowledge.
DEFAULT_WINDOW = 256 * 1024
#: Largest window a peer may grant (keeps arithmetic and memory bounded).
MAX_WINDOW = 1 << 30
DEFAULT_MAX_CHANNELS = 256
MAX_PORT_NAME = 256
MAX_MESSAGE = 1024
#: Bytes per channel and direction kept for a resumed session: unacknowledged plus buffered while away.
DEFAULT_REPLAY_BOUND = 1 << 20
#: How long the hub keeps a disconnected session's devices open for it to resume.
DEFAULT_GRACE = 60.0
#: Send a PING after this long without hearing from the peer; declare it dead after DEAD_TIMEOUT.
DEFAULT_PING_INTERVAL = 5.0
DEFAULT_DEAD_TIMEOUT = 15.0
#: Line operations a sender keeps for a resumption while no byte after them has been acknowledged.
MAX_REPLAY_OPERATIONS = 4096
