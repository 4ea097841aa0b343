"""Fixtures of the chart tests that need the control plane: the CRDs the chart's objects use."""

from __future__ import annotations

import pytest
from chart_testing import ROOT_CRD, install_third_party_crds

from fixtures.k8s import ControlPlane


@pytest.fixture(scope="session")
def chart_cluster(k8s_cluster: ControlPlane) -> ControlPlane:
    """The control plane with the Component CRD and the minimal cert-manager/ServiceMonitor CRDs."""
    k8s_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT_CRD))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/components.dapr.io", "--timeout=60s")
    install_third_party_crds(k8s_cluster)
    return k8s_cluster
