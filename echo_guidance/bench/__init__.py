"""Benchmarks: each module ``<name>.py`` with ``register_bench`` becomes ``echo-guidance bench <name>``."""
