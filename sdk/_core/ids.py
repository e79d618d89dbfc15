from __future__ import annotations

import hashlib
import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def new_id(now_ms: int | None = None) -> str:
    """A ULID: 26 characters, sortable by creation time.

    Monotonic within a process: ids made in the same millisecond sort in the order they were
    made (the random part of the previous one plus one), so events sent back to back are
    processed, and deduplicated, in the order they were sent.
    """
    global _last
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        value = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
        if value >> _RANDOM_BITS <= _last >> _RANDOM_BITS:
            value = _last + 1
        _last = value
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def derived_id(*parts: str) -> str:
    """A stable id from its parts: the same parts give the same id on every replay."""
    digest = hashlib.sha1("\x1f".join(parts).encode()).digest()[:17]
    value = int.from_bytes(digest, "big") >> 6
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def step_hash(step_id: str, occurrence: int) -> str:
    """The stored id of a step call: sha1 of `id`, or of `id:n` for its n-th repeat."""
    key = step_id if occurrence == 0 else f"{step_id}:{occurrence}"
    return hashlib.sha1(key.encode()).hexdigest()
