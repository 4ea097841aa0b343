"""Our Component CRD against Dapr's own (from the github.com/dapr/dapr module): a strict superset."""

from __future__ import annotations

import yaml
from crd_compare import crd_superset_problems, superset_problems
from dapr_crd import dapr_crd
from operator_testing import CRD


def test_our_crd_is_a_strict_superset_of_daprs() -> None:
    ours = yaml.safe_load(CRD.read_text())
    theirs = dapr_crd()
    assert crd_superset_problems(ours, theirs) == []
    # The comparison itself finds what it should: Dapr's is not a superset of ours (no status).
    assert ".status: missing" in crd_superset_problems(theirs, ours)


def test_the_comparison_catches_narrowing_and_type_changes() -> None:
    theirs = {"type": "object", "properties": {"a": {"type": "string"}}, "required": []}
    assert superset_problems(theirs, theirs) == []
    assert superset_problems({**theirs, "required": ["a"]}, theirs) == [".: also requires ['a']"]
    narrowed = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}
    assert superset_problems(narrowed, theirs) == [".a: adds maxLength 3"]
    retyped = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert superset_problems(retyped, theirs) == [".a: type is 'integer', theirs 'string'"]
