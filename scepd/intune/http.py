"""The one HTTP client every Entra, Graph and Intune call goes through.

Built from the [intune] settings, so a corporate network's outbound proxy
(with its credentials read from a secret source, never from the config file)
and a TLS-inspecting proxy's root certificates apply to every call: token,
discovery, ScepActions and the PKI connector alike. Without `intune.proxy`,
the usual HTTPS_PROXY / NO_PROXY environment variables apply, as httpx reads them.

Many devices enroll at once, and each holds a connection for a validation and a
notification that may take Intune hundreds of milliseconds, so scepd needs as many
connections as Intune calls in flight. httpcore's pool does not scale to that:
every time a request starts or ends it re-examines every connection once per idle
connection, quadratic in the pool's size, and httpx's default keeps too few alive,
so the rest reconnect (figures in docs/benchmarks.md). So the connections are
spread over small pools and each request goes to the least busy one.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx

SHARDS = 8
CONNECTIONS_PER_SHARD = 32

# httpx logs every request at INFO: a second line per Intune call beside scepd's own
# event=intune_call (which carries the client-request-id), and a measurable share of the
# CPU an Intune enrollment costs the event loop under load (bench/intune_load.py).
logging.getLogger("httpx").setLevel(logging.WARNING)


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several small connection pools; each request to the one with the fewest in flight."""

    def __init__(self, make: Callable[[], httpx.AsyncBaseTransport], shards: int = SHARDS) -> None:
        self.shards = [make() for _ in range(shards)]
        self.in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self.shards)), key=self.in_flight.__getitem__)
        self.in_flight[index] += 1
        try:
            return await self.shards[index].handle_async_request(request)
        finally:
            self.in_flight[index] -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


def http_client(
    *,
    proxy: str | None = None,
    proxy_credentials: str | None = None,
    ca_bundle: Path | None = None,
) -> httpx.AsyncClient:
    """`proxy_credentials` is the secret itself ("user:password"), read by the caller."""
    # One context for every pool: each would otherwise load the CA bundle itself (~0.1 s of CPU
    # per pool at start-up, in every serving process).
    if ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(ca_bundle))
    else:
        verify = httpx.create_ssl_context()
    proxy_arg: httpx.Proxy | None = None
    if proxy is not None:
        auth = None
        if proxy_credentials is not None:
            user, sep, password = proxy_credentials.partition(":")
            if not sep:
                raise ValueError("intune.proxy_credentials must hold user:password")
            auth = (user, password)
        proxy_arg = httpx.Proxy(proxy, auth=auth)
    limits = httpx.Limits(max_connections=CONNECTIONS_PER_SHARD, max_keepalive_connections=CONNECTIONS_PER_SHARD)
    transport = ShardedTransport(lambda: httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=proxy_arg))
    # An explicit proxy takes every call: the environment's HTTP(S)_PROXY and NO_PROXY would
    # otherwise be mounted before it. Without one, they apply (through httpx's own pool).
    return httpx.AsyncClient(transport=transport, verify=verify, trust_env=proxy is None)
