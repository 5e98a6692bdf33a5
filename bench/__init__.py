"""Benchmarks for adaptvc (``python -m bench``). See docs/benchmarks.md."""
