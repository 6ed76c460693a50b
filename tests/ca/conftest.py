"""CA keys on the session's SoftHSM2 token, as in production (made once: tests/conftest.py); the CA built
over them: tests/support/ca.py."""

from __future__ import annotations

import pytest

from scepd.keys.base import Signer
from scepd.keys.pkcs11.pool import TokenPool


@pytest.fixture
def ec_ca_key(token_pool: TokenPool, ca_key_labels: dict[str, str]) -> Signer:
    return token_pool.key(ca_key_labels["ec"])


@pytest.fixture
def rsa_ca_key(token_pool: TokenPool, ca_key_labels: dict[str, str]) -> Signer:
    return token_pool.key(ca_key_labels["rsa"])
