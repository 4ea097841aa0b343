"""Kubernetes resource quantities (`50m`, `64Mi`, `1e3`): checked, and compared by value.

The API server stores quantities in canonical form (`1000` becomes `1k`, `0.5` becomes `500m`), so the
operator compares what it wants with what is there by value, or it would rewrite them on every pass.
"""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"[+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+|[numkMGTPE]|[KMGTPE]i)?")
_SUFFIX = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    **{f"{p}i": 1024.0 ** (i + 1) for i, p in enumerate("KMGTPE")},
}


def is_quantity(text: str) -> bool:
    return _QUANTITY.fullmatch(text) is not None


def value(text: str) -> float:
    """The number a quantity stands for (64Mi -> 67108864.0); ValueError if it is none."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity")
    suffix = match[3] or ""
    if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
        return float(text.lstrip("+"))
    return float(match[1]) * _SUFFIX[suffix]


def same(a: object, b: object) -> bool:
    """Whether two quantities (strings or numbers) are equal in value."""
    try:
        return abs(value(str(a)) - value(str(b))) <= 1e-9 * max(1.0, abs(value(str(a))))
    except ValueError:
        return a == b
