"""Request and response ids cut from a pool of random bytes."""

from __future__ import annotations

import os
import uuid

from moorage.server import _ids
from moorage.server._ids import uuid4_hex, uuid4_text


def test_ids_are_version_4_uuids_in_both_spellings() -> None:
    for _ in range(600):  # more than one pool
        parsed = uuid.UUID(hex=uuid4_hex())
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        text = uuid4_text()
        assert str(uuid.UUID(text)) == text and uuid.UUID(text).version == 4


def test_ids_do_not_repeat() -> None:
    ids = {uuid4_hex() for _ in range(20_000)}
    assert len(ids) == 20_000


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    uuid4_hex()  # the pool holds unused bytes now
    upcoming = bytes(_ids._pool[_ids._offset : _ids._offset + 16 * 8])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, "".join(uuid4_hex() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
    # what the parent would have handed out next, with the version and variant bits set
    parent_next = set()
    for i in range(0, len(upcoming), 16):
        raw = bytearray(upcoming[i : i + 16])
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        parent_next.add(raw.hex())
    assert len(child_ids) == 8 and not child_ids & parent_next
