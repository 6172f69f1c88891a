"""Raw HTTP/2 for the attacker: frames built by hand, a request header block, a frame reader."""

from __future__ import annotations

import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
CONTINUATION = 0x9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
NO_ERROR, PROTOCOL_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x8, 0xB
INFER = b"/inference.GRPCInferenceService/ModelInfer"


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", sid)
    return head + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK literal without indexing, new name (RFC 7541 6.2.2): no table state, repeatable."""
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


def request_block(path: bytes = INFER) -> bytes:
    return b"".join(
        _literal(name, value)
        for name, value in (
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"localhost"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        )
    )  # fmt: skip


def grpc_message(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The complete frames in ``data``: (type, flags, stream, payload)."""
    out = []
    pos = 0
    while len(data) - pos >= 9:
        length = int.from_bytes(data[pos : pos + 3], "big")
        if len(data) - pos - 9 < length:
            break
        kind, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        out.append((kind, flags, sid, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return out


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY in ``data`` (server output after its preface)."""
    for kind, _, _, payload in frames(data):
        if kind == GOAWAY and len(payload) >= 8:
            return int.from_bytes(payload[4:8], "big")
    return None


def connect(port: int, *, rcvbuf: int | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # small: the server's output backs up at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def _now(sock: socket.socket, flags: int, size: int = 1 << 20) -> bytes | None:
    """``recv`` that never waits (``None``: nothing there yet). A socket with a timeout would
    wait for it even with ``MSG_DONTWAIT``, so the timeout is lifted for the call."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(size, flags)
    except (BlockingIOError, InterruptedError):
        return None
    finally:
        sock.settimeout(timeout)


def peek(sock: socket.socket, size: int = 1 << 20) -> bytes:
    """What the server sent so far, left in the socket (a peer that never reads)."""
    try:
        return _now(sock, socket.MSG_PEEK, size) or b""
    except OSError:
        return b""


def read_all(sock: socket.socket, timeout: float = 3.0, limit: int = 1 << 20) -> bytes:
    """Read until the server closes, ``timeout`` or ``limit`` bytes."""
    sock.settimeout(timeout)
    out = b""
    try:
        while len(out) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    return out


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection; reads and drops what it sent."""
    try:
        while True:
            chunk = _now(sock, 0)
            if chunk is None:
                return False
            if not chunk:
                return True
    except OSError:
        return True


def poll(sock: socket.socket) -> tuple[bool, bytes]:
    """(closed by the server, what it sent) without waiting."""
    out = b""
    try:
        while True:
            chunk = _now(sock, 0)
            if chunk is None:
                return False, out
            if not chunk:
                return True, out
            out += chunk
    except OSError:
        return True, out


#: /proc/net/tcp states of a socket its owner has not closed: ESTABLISHED, CLOSE_WAIT.
_HELD_STATES = {"01", "08"}


def served_connections(port: int) -> int:
    """TCP connections to local ``port`` that the server side still holds (established, or
    closed by the client but not yet by the server), from ``/proc/net/tcp{,6}``."""
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in _HELD_STATES:
                held += 1
    return held
