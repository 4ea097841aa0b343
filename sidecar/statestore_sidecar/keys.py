"""Key prefixes: how an application's key becomes the key a store holds, and back.

Stored key = `<prefix>||<key>`, the prefix chosen by the Component's `keyPrefix` metadata as daprd
chooses it: `appid` (default), `name`, `namespace`, `none`, or any other (lower-cased) string.
"""

from __future__ import annotations

from dataclasses import dataclass

SEPARATOR = "||"


class InvalidKeyPrefix(ValueError):
    pass


def prefix_for(strategy: str, *, app_id: str, store_name: str, namespace: str | None) -> str:
    """The prefix for a store; raise InvalidKeyPrefix for a custom prefix containing `||`."""
    lowered = (strategy or "appid").lower()
    if lowered == "appid":
        return app_id
    if lowered == "name":
        return store_name
    if lowered == "namespace":
        return f"{namespace}.{app_id}" if namespace else app_id
    if lowered == "none":
        return ""
    if SEPARATOR in lowered:
        raise InvalidKeyPrefix(f"keyPrefix {strategy!r} can't contain '||'")
    return lowered


@dataclass(frozen=True, slots=True)
class KeyScheme:
    prefix: str

    @property
    def query_prefix(self) -> str:
        """What every stored key of this scheme starts with."""
        return self.prefix + SEPARATOR if self.prefix else ""

    def stored(self, key: str) -> str:
        return self.prefix + SEPARATOR + key if self.prefix else key


def original_key(stored: str) -> str:
    """The application's key from a stored one: the second `||` segment, as daprd returns it."""
    parts = stored.split(SEPARATOR)
    return parts[1] if len(parts) > 1 else stored
