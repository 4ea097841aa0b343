"""Fixtures of the operator tests: the Component CRD and the operator process, per test namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from operator_testing import CRD, Kube, Operator

from fixtures.k8s import ControlPlane


@pytest.fixture(scope="session")
def component_crd(k8s_cluster: ControlPlane) -> ControlPlane:
    k8s_cluster.kubectl("apply", "-f", str(CRD))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/components.dapr.io", "--timeout=60s")
    return k8s_cluster


@pytest.fixture
def start_operator(
    component_crd: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(*extra: str) -> Operator:
        op = Operator(component_crd, namespace, tmp_path / f"operator-{len(started)}.log", extra)
        op.start()
        started.append(op)
        return op

    try:
        yield start
    finally:
        for op in started:
            op.stop()
            # Shown by pytest only when the test failed.
            lines = [line for line in op.output().splitlines() if " DEBUG " not in line]
            print(f"--- {op.log.name} (last 80 lines) ---", *lines[-80:], sep="\n")


@pytest.fixture
def operator(start_operator: Callable[..., Operator]) -> Operator:
    return start_operator()


@pytest.fixture
def kube(component_crd: ControlPlane, namespace: str) -> Kube:
    return Kube(component_crd, namespace)
