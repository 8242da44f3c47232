"""Benchmarks: each script prints figures against a baseline run in the same process (bench/RESULTS.md)."""
