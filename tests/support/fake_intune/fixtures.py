"""A pytest fixture for tests elsewhere: `from tests.support.fake_intune.fixtures import fake_intune`
in a conftest.py makes `fake_intune` available to the tests beside it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_intune.server import running_fake_intune
from tests.support.fake_intune.state import FakeIntune


@pytest.fixture
def fake_intune() -> Iterator[FakeIntune]:
    """A fresh fake per test (starting one takes milliseconds), with the default tenant,
    client id and secret (`fake.tenant`, `fake.client_id`, `fake.client_secret`)."""
    with running_fake_intune() as fake:
        yield fake
