"""Random version-4 UUIDs for request and response ids, cut from a pool of ``os.urandom``
bytes.

Every request that arrives without an id gets one, and every v2 response without one gets its
own: two ``getrandom`` system calls per request with :func:`uuid.uuid4`. Here one call fills a
4 KiB pool, enough for 256 ids; the bytes are the same kernel randomness ``uuid4`` uses. The
pool is emptied in a forked child, so workers never hand out the same ids.
"""

from __future__ import annotations

import os
import threading

__all__ = ["uuid4_hex", "uuid4_text"]

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_offset = 0


def _empty_pool() -> None:
    global _pool, _offset
    _pool, _offset = b"", 0


os.register_at_fork(after_in_child=_empty_pool)


def _uuid4_bytes() -> bytearray:
    global _pool, _offset
    with _lock:
        start = _offset
        if start + 16 > len(_pool):
            _pool, start = os.urandom(_POOL_BYTES), 0
        _offset = start + 16
        raw = bytearray(_pool[start : start + 16])
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw


def uuid4_hex() -> str:
    """A random UUID as ``uuid.uuid4().hex`` writes it (32 hex digits)."""
    return _uuid4_bytes().hex()


def uuid4_text() -> str:
    """A random UUID as ``str(uuid.uuid4())`` writes it (8-4-4-4-12 hex digits)."""
    h = _uuid4_bytes().hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
