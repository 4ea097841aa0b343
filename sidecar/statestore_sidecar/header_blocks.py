"""Request header blocks, decoded once for as long as the client's HPACK table stays as it is.

A gRPC client sends the same headers on every call. Once they are in its dynamic table, a call's
block is a handful of indexed fields, the same bytes from one call to the next, and decoding it
with `hpack` (pure Python, an object per header) took ~15% of a call's CPU. A block whose decoding
leaves the table unchanged decodes to the same headers whenever the table is in that state; such
blocks are remembered until a block changes the table (a new entry, an eviction, a size update).
"""

from __future__ import annotations

from hpack import Decoder

from .grpc_calls import Headers

KNOWN_LIMIT = 64  # blocks remembered per connection (a deadline in every call makes each unique)


class HeaderBlocks:
    """One connection's HPACK decoder, with the blocks that did not change its table remembered.

    The headers returned may be shared between calls: they are read, never changed.
    """

    def __init__(self, max_header_list_size: int) -> None:
        self.decoder = Decoder(max_header_list_size=max_header_list_size)
        self.known: dict[bytes, Headers] = {}

    def decode(self, block: bytes) -> Headers:
        headers = self.known.get(block)
        if headers is not None:
            return headers
        table = self.decoder.header_table
        before = (table.maxsize, tuple(table.dynamic_entries))
        headers = dict(self.decoder.decode(block, raw=True))
        if (table.maxsize, tuple(table.dynamic_entries)) != before:
            self.known.clear()  # what an index means has changed
        elif len(self.known) < KNOWN_LIMIT:
            self.known[block] = headers
        return headers
