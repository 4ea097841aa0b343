"""Fixtures shared by every test: stores of every backend, real servers, the control plane."""

pytest_plugins = ("fixtures.stores", "fixtures.backends", "fixtures.k8s", "fixtures.pluggable")
