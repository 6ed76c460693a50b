"""The one HTTP client every Entra, Graph and Intune call goes through.

Built from the [intune] settings, so a corporate network's outbound proxy
(with its credentials read from a secret source, never from the config file)
and a TLS-inspecting proxy's root certificates apply to every call: token,
discovery, ScepActions and the PKI connector alike. Without `intune.proxy`,
the usual HTTPS_PROXY / NO_PROXY environment variables apply, as httpx reads them.

The pool is sized for many devices enrolling at once: each enrollment holds a
connection for a validation and a notification that may take Intune hundreds of
milliseconds, and a pool smaller than the number of devices in flight makes
them queue for a connection rather than for Intune.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import httpx

MAX_CONNECTIONS = 256
MAX_KEEPALIVE = 128

# httpx logs every request at INFO: a second line per Intune call beside scepd's own
# event=intune_call (which carries the client-request-id), and a measurable share of the
# CPU an Intune enrollment costs the event loop under load (bench/intune_load.py).
logging.getLogger("httpx").setLevel(logging.WARNING)


def http_client(
    *,
    proxy: str | None = None,
    proxy_credentials: str | None = None,
    ca_bundle: Path | None = None,
) -> httpx.AsyncClient:
    """`proxy_credentials` is the secret itself ("user:password"), read by the caller."""
    verify: ssl.SSLContext | bool = True
    if ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(ca_bundle))
    proxy_arg: httpx.Proxy | None = None
    if proxy is not None:
        auth = None
        if proxy_credentials is not None:
            user, sep, password = proxy_credentials.partition(":")
            if not sep:
                raise ValueError("intune.proxy_credentials must hold user:password")
            auth = (user, password)
        proxy_arg = httpx.Proxy(proxy, auth=auth)
    return httpx.AsyncClient(
        proxy=proxy_arg,
        verify=verify,
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE),
    )
