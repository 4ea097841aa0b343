"""Real parts for tests, benchmarks and local runs: free ports, polling, throwaway certificate
authorities, a local Kubernetes control plane and database servers. Nothing here is a mock.

Modules: `ports` (free_port), `waiting` (wait_for), `pki` (CertificateAuthority, make_pki),
`control_plane` (ControlPlane; `python -m statestore_testing.control_plane up|down|status`) and
`databases` (RedisServer, PostgresServer, MariaDBServer). The pytest fixtures built on them live in
the test suite (tests/fixtures/).
"""
