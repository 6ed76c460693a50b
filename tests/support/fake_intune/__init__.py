"""A faithful fake of the Microsoft side of an Intune SCEP integration, served
over real HTTP on loopback: Entra's token endpoint, Graph service discovery,
Intune ScepActions and the PKI connector's revocation API, as
docs/intune-contract.md describes them.

    with running_fake_intune(tenant="contoso.onmicrosoft.com", client_id=ID, client_secret=SECRET) as fake:
        challenge = fake.mint_challenge("CN=device1", ["dns:device1.contoso.com"])
        ...  # point a client at fake.authority / fake.graph_url
        assert fake.notifications()[transaction_id][0].kind == "success"

`python -m tests.support.fake_intune --help` serves it for the README demo.
"""

from tests.support.fake_intune.model import (
    Call,
    Challenge,
    Fault,
    Notification,
    Reply,
    Request,
    RevocationItem,
    RevocationResult,
)
from tests.support.fake_intune.server import running_fake_intune, serve_fake_intune
from tests.support.fake_intune.state import FakeIntune, IssuedToken
from tests.support.fake_intune.wire import ROUTES, RevocationCode, ScepCode

__all__ = [
    "ROUTES",
    "Call",
    "Challenge",
    "FakeIntune",
    "Fault",
    "IssuedToken",
    "Notification",
    "Reply",
    "Request",
    "RevocationCode",
    "RevocationItem",
    "RevocationResult",
    "ScepCode",
    "running_fake_intune",
    "serve_fake_intune",
]
