"""Bounded fuzzing of the readers a client reaches before any key is used (issue 14 point 7).

Mutated real messages (tests/support/fuzzing.py) through parse_pki_message, parse_envelope, the CSR load and
the IssuerAndSubject/Serial readers: each input ends in a result or the error type the reader
promises (ScepError, MalformedMessage, ValueError for the CSR), never anything else, and quickly.
The long run is bench/fuzz.py.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzzing import READERS, Seeds, make_seeds, mutate, seeds_for

_SEEDS: list[Seeds] = []


def seeds() -> Seeds:
    if not _SEEDS:
        _SEEDS.append(make_seeds())
    return _SEEDS[0]


ops = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 1 << 16), st.integers(0, 1 << 16)), min_size=1, max_size=6
)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_unmutated_seeds_read(reader: str) -> None:
    """The seeds are good inputs, so the mutations start from something each reader accepts."""
    for seed in seeds_for(seeds(), reader):
        assert READERS[reader](seed) in ("ok", "ok/ScepError", "ScepError/ok")


@pytest.mark.parametrize("reader", sorted(READERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_inputs_end_in_a_promised_outcome(reader: str, data: st.DataObject) -> None:
    pool = seeds_for(seeds(), reader)
    seed = pool[data.draw(st.integers(0, len(pool) - 1), label="seed")]
    donor = seeds().messages[0]
    mutated = mutate(seed, data.draw(ops, label="ops"), donor)
    started = time.perf_counter()
    READERS[reader](mutated)  # raises Unexpected otherwise
    assert time.perf_counter() - started < 2.0, "a reader took over 2 s on one input"


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(max_size=600))
def test_arbitrary_bytes_end_in_a_promised_outcome(blob: bytes) -> None:
    for reader in READERS.values():
        reader(blob)
