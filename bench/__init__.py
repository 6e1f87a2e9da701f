"""Benchmarks of conduit-fleet against the emulator; `python -m bench` runs them (see docs/benchmarks.md)."""
