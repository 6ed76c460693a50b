"""How to reach Intune and how hard to try: the part of the [intune] table the client uses.

A value object with no behaviour, apart from the client, so that the
configuration can build it without loading the HTTP stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from scepd.intune import contract
from scepd.intune.retry import RetryPolicy

# What scepd calls itself to Intune unless intune.provider_name says otherwise (the package version).
DEFAULT_PROVIDER_NAME = "scepd/0.1.0"


@dataclass(frozen=True)
class IntuneSettings:
    tenant: str
    client_id: str
    provider_name: str = DEFAULT_PROVIDER_NAME  # PROVIDER_NAME_AND_VERSION: callerInfo and UserAgent
    authority: str = contract.DEFAULT_AUTHORITY
    graph_url: str = contract.DEFAULT_GRAPH_URL
    intune_resource_url: str = contract.DEFAULT_INTUNE_RESOURCE_URL
    intune_app_id: str = contract.INTUNE_APP_ID
    timeout: float = 30.0  # seconds, per HTTP exchange
    retries: int = 2  # further attempts after the first, for transport errors, 429 and 5xx
    backoff: float = 0.5  # first pause; doubles each retry
    max_retry_after: float = 10.0
    # successNotification, all attempts together: past it the certificate is withheld and revoked.
    # Microsoft's C# library waits up to 100 s (HttpClient's default) for its single attempt.
    notification_budget: float = 100.0
    assertion_algorithm: str = "PS256"  # client assertions: PS256 + x5t#S256, or RS256 + x5t

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy every Entra, Graph and Intune call follows."""
        return RetryPolicy(self.retries, self.backoff, self.max_retry_after)
