"""What the tests and the benchmarks share: a real scepd daemon and its state (daemon.py), the session's
SoftHSM2 token (softhsm.py), a SCEP client on the codec's client half (scep_client.py), the fake Intune
(fake_intune/), the external clients' harness (external/), fuzzing helpers and a token probe.

bench/ imports these as `tests.support.*`: run its scripts from the repository root as `python -m bench.NAME`."""
