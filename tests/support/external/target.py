"""What the external-client tests need to know about a SCEP server under test.

Any server fixture (micromdm's reference `scepserver` here, scepd later) yields
one of these, so the same client helpers and tests run against either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ScepTarget:
    url: str
    """Full SCEP endpoint URL, e.g. http://127.0.0.1:PORT/scep (clients append ?operation=...)."""
    ca_pem_path: Path
    """The issuing CA certificate (PEM); issued certificates must chain to it."""
    challenge: str
    """A challenge password the server accepts."""
    legacy_des_replies: bool = False
    """True if the server encrypts CertRep envelopes with single DES (micromdm does):
    OpenSSL-3 based clients (certmonger) then need the OpenSSL legacy provider."""
