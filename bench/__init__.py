"""Benchmarks of the state API against direct backend access (`python -m bench.run`, see bench/README.md)."""
