"""Whether one CRD's schema accepts everything another's does, with the same meaning (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What a field is: both schemas must say the same.
SAME = (
    "type",
    "format",
    "default",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
)
# What narrows a field: the superset may not add any of these to a field of the subset.
NARROWING = (
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
)


def superset_problems(ours: Mapping[str, Any], theirs: Mapping[str, Any], path: str = "") -> list[str]:
    """Every way in which schema `ours` fails to be a strict superset of schema `theirs` (empty: none)."""
    problems = []
    for key in SAME:
        if ours.get(key) != theirs.get(key):
            problems.append(f"{path or '.'}: {key} is {ours.get(key)!r}, theirs {theirs.get(key)!r}")
    for key in NARROWING:
        if key in ours and ours[key] != theirs.get(key):
            problems.append(f"{path or '.'}: adds {key} {ours[key]!r}")
    extra_required = set(ours.get("required") or []) - set(theirs.get("required") or [])
    if extra_required:
        problems.append(f"{path or '.'}: also requires {sorted(extra_required)}")
    for name, sub in (theirs.get("properties") or {}).items():
        mine = (ours.get("properties") or {}).get(name)
        if mine is None:
            problems.append(f"{path}.{name}: missing")
        else:
            problems.extend(superset_problems(mine, sub, f"{path}.{name}"))
    if "items" in theirs:
        problems.extend(superset_problems(ours.get("items") or {}, theirs["items"], f"{path}[]"))
    return problems


def crd_superset_problems(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in ("group", "scope"):
        if ours["spec"][key] != theirs["spec"][key]:
            problems.append(f"spec.{key} differs")
    for key in ("kind", "plural", "singular"):
        if ours["spec"]["names"].get(key) != theirs["spec"]["names"].get(key):
            problems.append(f"spec.names.{key} differs")
    missing = set(theirs["spec"]["names"].get("categories") or []) - set(
        ours["spec"]["names"].get("categories") or []
    )
    if missing:
        problems.append(f"spec.names.categories lacks {sorted(missing)}")
    mine = {v["name"]: v for v in ours["spec"]["versions"]}
    for version in theirs["spec"]["versions"]:
        ours_v = mine.get(version["name"])
        if ours_v is None:
            problems.append(f"version {version['name']} missing")
            continue
        for key in ("served", "storage"):
            if ours_v.get(key) != version.get(key):
                problems.append(f"version {version['name']}: {key} differs")
        problems.extend(
            superset_problems(ours_v["schema"]["openAPIV3Schema"], version["schema"]["openAPIV3Schema"])
        )
    return problems
