"""Just enough of Prometheus' text format to take differences of counters and histograms between two
scrapes (the operator's /metrics, kube-apiserver's /metrics)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = dict[str, str]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


def parse(text: str) -> list[Sample]:
    out: list[Sample] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        out.append(Sample(name, dict(_LABEL.findall(labels or "")), number))
    return out


def total(
    samples: list[Sample], name: str, by: str | None = None, where: Callable[[Labels], bool] | None = None
) -> dict[str, float]:
    """Sum of one metric's samples, grouped by one label ("" when `by` is None)."""
    return total_by(samples, name, lambda labels: labels.get(by, "") if by else "", where)


def total_by(
    samples: list[Sample],
    name: str,
    key: Callable[[Labels], str],
    where: Callable[[Labels], bool] | None = None,
) -> dict[str, float]:
    """Sum of one metric's samples, grouped by key(labels)."""
    out: dict[str, float] = {}
    for s in samples:
        if s.name == name and (where is None or where(s.labels)):
            group = key(s.labels)
            out[group] = out.get(group, 0.0) + s.value
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def quantile(buckets: dict[str, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile q (buckets: `le` -> cumulative count)."""
    ordered = sorted((math.inf if le == "+Inf" else float(le), n) for le, n in buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    for bound, count in ordered:
        if count >= rank:
            return bound
    return None
