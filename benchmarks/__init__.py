"""Benchmarks: `python -m benchmarks <name> [--quick]`; see ../shared/BENCHMARKS.md conventions."""
