"""Benchmark helpers that are not part of the installable runtime (peer adapters, check scripts)."""
