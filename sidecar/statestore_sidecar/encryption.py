"""daprd's automatic state encryption: its metadata, the rules of its keys, and the keys of a store.

A Component turns it on with `primaryEncryptionKey` (and, for rotation, `secondaryEncryptionKey`),
each a `secretKeyRef` to a hex-encoded AES key of 128, 192 or 256 bits. Every stored value is then
`base64(nonce + AES-GCM ciphertext) + "||" + <the key's secret name>`, so a read picks its key by that
suffix. The ciphers live in `stores/encrypted.py`; this module imports no cryptography so that the
operator validates keys cheaply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PRIMARY = "primaryEncryptionKey"
SECONDARY = "secondaryEncryptionKey"
NAMES = (PRIMARY, SECONDARY)
# AES-128, AES-192 and AES-256, as Go's aes.NewCipher accepts them.
KEY_BYTES = (16, 24, 32)
_HEX = re.compile(r"[0-9A-Fa-f]*")


def parse_key(text: str) -> bytes:
    """The AES key of a hex-encoded secret value, decoded as daprd decodes it (`hex.DecodeString`).

    A ValueError says what is wrong without quoting the value: it is key material.
    """
    if not text:
        raise ValueError("the secret is empty; it must hold a hex-encoded AES key")
    if not _HEX.fullmatch(text):
        raise ValueError(
            "the secret is not a hex-encoded AES key: it holds characters other than 0-9 and a-f"
            " (a trailing newline or spaces?)"
        )
    if len(text) % 2:
        raise ValueError(f"the secret has an odd number of hex digits ({len(text)})")
    key = bytes.fromhex(text)
    if len(key) not in KEY_BYTES:
        raise ValueError(
            f"the key is {len(key) * 8} bits ({len(text)} hex digits); AES-GCM takes 128-, 192- or 256-bit"
            " keys (32, 48 or 64 hex digits)"
        )
    return key


def check_refs(given: dict[str, str | None]) -> None:
    """The rules on how the keys are named, from each encryption item as written to its secret's name
    (None when the item is not a `secretKeyRef`).

    Raises KeyRuleError naming the item. Items of other names are not looked at.
    """
    found: dict[str, tuple[str, str | None]] = {}
    for written, secret in given.items():
        canonical = next((n for n in NAMES if n.lower() == written.lower()), None)
        if canonical is None:
            continue
        if written != canonical:
            # daprd matches these two names exactly: any other spelling would store plain text there.
            raise KeyRuleError(written, f"write it as {canonical!r}: daprd reads only that spelling")
        if secret is None:
            raise KeyRuleError(
                written,
                "must be a secretKeyRef: the secret's name labels every value the key encrypts, so a"
                " key given as a plain value or envRef could not be found again (Dapr never takes it"
                " as plain text)",
            )
        found[canonical] = (written, secret)
    if SECONDARY in found and PRIMARY not in found:
        raise KeyRuleError(
            found[SECONDARY][0],
            f"needs {PRIMARY}: new values are encrypted with the primary key, the secondary one only"
            " decrypts values written before a rotation",
        )
    if PRIMARY in found and SECONDARY in found and found[PRIMARY][1] == found[SECONDARY][1]:
        raise KeyRuleError(
            found[SECONDARY][0],
            f"names the same secret as {PRIMARY} ({found[PRIMARY][1]!r}): each stored value is labelled"
            " with its key's secret name, so the two keys must come from two secrets",
        )


class KeyRuleError(ValueError):
    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"metadata {item!r}: {reason}")
        self.item = item
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Key:
    """One AES key and the secret name that labels the values it encrypts."""

    name: str
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of an encrypted store: new values use `primary`; reads accept either."""

    primary: Key
    secondary: Key | None = None

    def by_name(self, name: str) -> Key | None:
        # The primary wins a tie, as in daprd (the rules refuse two keys of one secret anyway).
        for key in (self.primary, self.secondary):
            if key is not None and key.name == name:
                return key
        return None


def keys_of(secret_names: dict[str, str], hex_values: dict[str, object]) -> Keys | None:
    """The keys of a store from its encryption items' secret names and (validated) hex values, by
    canonical item name; None when the store is not encrypted."""
    primary = hex_values.get(PRIMARY)
    if not isinstance(primary, str) or not primary:
        return None
    secondary = hex_values.get(SECONDARY)
    return Keys(
        Key(secret_names[PRIMARY], parse_key(primary)),
        Key(secret_names[SECONDARY], parse_key(secondary))
        if isinstance(secondary, str) and secondary
        else None,
    )
