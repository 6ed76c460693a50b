"""Benchmarks. Run each from the repository root as `python -m bench.NAME` (see docs/benchmarks.md):
that puts the root on the import path, so the scripts use scepd and the shared test helpers in
`tests.support` as ordinary imports."""
