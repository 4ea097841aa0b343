"""Items from the replies to the reads of `state.redis`: HMGET of `data` and `version`, and PTTL.

Error replies arrive as exception values (hiredis and redis-py with `raise_on_error=False`); one
for any key fails the whole read, as it does in daprd.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..base import Item


def item(fields: Sequence[Any], pttl: Any, now: float) -> Item | None:
    """The item from HMGET data version and the key's PTTL (milliseconds; negative: none)."""
    data, version = fields
    if data is None or version is None:
        return None
    remaining = int(pttl)
    return Item(data, version.decode(), now + remaining / 1000.0 if remaining >= 0 else None)


def present(reply: Any) -> bool:
    """Whether an HMGET reply found the item."""
    if isinstance(reply, Exception):
        raise reply
    return bool(reply[0] is not None and reply[1] is not None)


def found(keys: Sequence[str], replies: Sequence[Any]) -> dict[str, Item]:
    """Items from replies [data, version, pttl] (a PTTL may be an error reply)."""
    now = time.time()
    out: dict[str, Item] = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply[2], Exception):
            raise reply[2]
        got = item(reply[:2], reply[2], now)
        if got is not None:
            out[key] = got
    return out
