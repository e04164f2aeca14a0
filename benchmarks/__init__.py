"""Benchmarks: quality, speed and load-with-faults runs, each beside its baseline measured in the same run."""
