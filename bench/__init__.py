"""Benchmarks: each module prints a markdown table; `python -m bench` runs them all."""
