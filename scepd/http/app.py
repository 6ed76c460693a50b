"""The SCEP HTTP binding (RFC 8894 section 4): thin handlers over `ScepService`.

Handlers only translate HTTP to bytes and back. The single job that belongs
here is decoding what clients actually send: GET `message` values whose `+`
and `/` arrive unescaped (a `+` then reads as a space), URL-safe alphabets,
line-wrapped or unpadded base64.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from scepd import metrics
from scepd.ca.authority import CertificateAuthority
from scepd.ca.publisher import CrlPublisher
from scepd.enroll.service import ScepService
from scepd.health import Readiness
from scepd.http.health_routes import add_health_routes
from scepd.keys.base import KeyBackendError
from scepd.logs import event
from scepd.scep import (
    MalformedMessage,
    build_certs_only,
    build_next_ca_cert,
    caps_text,
    sign_next_ca_cert,
)
from scepd.scep.constants import (
    CONTENT_TYPE_CA_CERT,
    CONTENT_TYPE_CA_RA_CERT,
    CONTENT_TYPE_CAPS,
    CONTENT_TYPE_NEXT_CA_CERT,
    CONTENT_TYPE_PKI_MESSAGE,
)
from scepd.store.base import StoreError

log = logging.getLogger("scepd.http")

CONTENT_TYPE_CRL = "application/pkix-crl"  # RFC 5280 4.2.1.13, DER

LEGACY_PATH = "/cgi-bin/pkiclient.exe"
_B64_JUNK = re.compile(r"[\r\n\t]")


class BadRequest(Exception):
    """Answered as HTTP 400 with the message as a short plain-text reason."""


Background = Callable[..., Awaitable[None]]
"""A loop that runs beside the server (`await nursery.start(loop)`): revocation sync, CRL refresh."""


@dataclass(frozen=True)
class Site:
    """What the app serves: the CA, and one service per SCEP path."""

    ca: CertificateAuthority
    services: Mapping[str, ScepService]
    caps: tuple[str, ...]
    max_message_bytes: int
    background: tuple[Background, ...] = ()
    crl: CrlPublisher | None = None  # serves the CRL at crl_path when set
    crl_path: str = "/crl/ca.crl"
    readiness: Readiness | None = None  # answers /readyz when set
    refresh_metrics: Callable[[], Awaitable[None]] | None = None  # store-derived gauges, run on scrape
    rebuild: Callable[..., Mapping[str, ScepService]] | None = None  # services from a reloaded Config (SIGHUP)


def decode_get_message(value: str) -> bytes:
    """Base64 of a GET PKIOperation, tolerant of how real clients mangle it.

    A '+' sent unescaped arrives as a space after form decoding, at either end too: base64 has no
    spaces, so every space is put back as '+' (stripping first would drop a '+' that ended the text)."""
    text = _B64_JUNK.sub("", value).replace(" ", "+")
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("message is not valid base64") from None


def _text(status: int, reason: str) -> Response:
    return Response(reason + "\n", status=status, content_type="text/plain; charset=utf-8")


RETRY_AFTER_SECONDS = 30


def _unavailable(reason: str) -> Response:
    """A fault of ours, not the client's: 503, and when to come back (RFC 9110 10.2.3)."""
    response = _text(503, reason)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def create_app(site: Site) -> QuartTrio:
    app = QuartTrio("scepd")
    # Quart answers 413 itself past this; base64 in a GET grows by a third.
    app.config["MAX_CONTENT_LENGTH"] = site.max_message_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    async def scep() -> Response:
        service = site.services[request.path]
        operation = request.args.get("operation", "")
        if operation == "GetCACaps":
            return Response(caps_text(site.caps), content_type=CONTENT_TYPE_CAPS)
        if operation == "GetCACert":
            chain = site.ca.chain_der
            if len(chain) == 1:
                return Response(chain[0], content_type=CONTENT_TYPE_CA_CERT)
            return Response(build_certs_only(chain), content_type=CONTENT_TYPE_CA_RA_CERT)
        if operation == "GetNextCACert":
            if not site.ca.next_chain_der:
                return _text(404, "no rollover CA certificate is configured (GetCACaps does not offer GetNextCACert)")
            draft = build_next_ca_cert(
                site.ca.next_chain_der, signer_certificate=site.ca.certificate, digest=site.ca.hash
            )
            return Response(await sign_next_ca_cert(draft, site.ca.signer), content_type=CONTENT_TYPE_NEXT_CA_CERT)
        if operation != "PKIOperation":
            return _text(400, f"unknown operation {operation[:40]!r}")
        if request.method == "POST":
            body = await request.get_data(cache=False, as_text=False)
            assert isinstance(body, bytes)
            if body[:2] == b"MI":  # a few clients POST base64 instead of DER
                body = decode_get_message(body.decode("ascii", "replace"))
        else:
            message = request.args.get("message")
            if not message:
                return _text(400, "PKIOperation by GET needs a message parameter")
            if len(message) > site.max_message_bytes * 4 // 3 + 4:
                return _text(413, "message too large")
            body = decode_get_message(message)
        if not body:
            return _text(400, "empty PKIOperation")
        reply = await service.pki_operation(body)
        return Response(reply, content_type=CONTENT_TYPE_PKI_MESSAGE)

    for path in site.services:
        app.add_url_rule(path, f"scep:{path}", scep, methods=["GET", "POST"])

    publisher = site.crl
    if publisher is not None:

        async def crl() -> Response:
            current = publisher.current
            if current is None:  # only before the first one is signed at start-up (a large store)
                return _unavailable("no CRL has been published yet")
            return Response(current.der, content_type=CONTENT_TYPE_CRL)

        app.add_url_rule(site.crl_path, "crl", crl, methods=["GET"])

    add_health_routes(app, site.readiness, detailed=False)

    @app.errorhandler(BadRequest)
    async def bad_request(e: BadRequest) -> Response:
        return _text(400, str(e))

    @app.errorhandler(MalformedMessage)
    async def malformed(e: MalformedMessage) -> Response:
        return _text(400, f"not a SCEP message: {str(e)[:200]}")

    @app.errorhandler(KeyBackendError)
    async def token_fault(e: KeyBackendError) -> Response:
        event(log, logging.ERROR, "key_backend_error", error=str(e))
        return _unavailable("the key backend is unavailable; try again later")

    @app.errorhandler(StoreError)
    async def store_fault(e: StoreError) -> Response:
        # The store logged the fault once for its episode and counted it; one line
        # per request here would bury that line when every request fails.
        event(log, logging.DEBUG, "store_unavailable", kind=e.kind)
        return _unavailable("the certificate store is unavailable; try again later")

    @app.errorhandler(HTTPException)
    async def http_error(e: HTTPException) -> Response:
        return _text(e.code or 400, e.description or e.name)

    @app.after_request
    async def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.HTTP_REQUESTS.labels(rule, str(response.status_code)).inc()
        return response

    return app
