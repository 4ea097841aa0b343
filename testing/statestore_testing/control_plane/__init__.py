"""A real Kubernetes control plane on loopback (etcd, kube-apiserver, kube-controller-manager, and
kube-scheduler + kwok for Pods on a fake node). `python -m statestore_testing.control_plane up|down`
runs one by hand; tests use it through the `k8s_cluster` fixture."""

from statestore_testing.control_plane.binaries import FAKE_NODE, default_bin_dir, pinned_versions
from statestore_testing.control_plane.cluster import ControlPlane, ControlPlaneError, KubectlError
from statestore_testing.control_plane.kubeconfig import write_kubeconfig
from statestore_testing.pki import CertificateAuthority

__all__ = [
    "FAKE_NODE",
    "CertificateAuthority",
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
    "default_bin_dir",
    "pinned_versions",
    "write_kubeconfig",
]
