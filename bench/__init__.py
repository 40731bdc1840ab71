"""Benchmarks for reviewqueue: `python -m bench` (see bench/README.md)."""
