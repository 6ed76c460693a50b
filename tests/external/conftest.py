"""Fixtures for the external-client tests.

A server fixture yields a `ScepTarget` (URL, CA certificate, challenge).  Here
it is micromdm's reference `scepserver`; a scepd fixture yielding the same
dataclass can reuse every scenario in tests/support/external/scenarios.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.external.reference_server import SCEPSERVER, running_scepserver
from tests.support.external.target import ScepTarget

__all__ = ["ScepTarget"]

REFERENCE_CHALLENGE = "reference-challenge-4fK9"


@pytest.fixture(scope="session")
def reference_scep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepTarget]:
    if not shutil.which(SCEPSERVER) and not os.path.exists(SCEPSERVER):
        pytest.fail("micromdm scepserver is not installed (Debian package 'scep')")
    with running_scepserver(tmp_path_factory.mktemp("scepserver"), REFERENCE_CHALLENGE) as target:
        yield target
