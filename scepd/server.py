"""Compose the daemon from its configuration and serve it.

This is the one place that knows every concrete class: the token pool, the
store, the chain of enrollment steps per endpoint. Everything it builds
lives inside `open_site`'s context, so shutdown closes the token sessions and
the store in order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio
from cryptography import x509
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from scepd.ca.authority import CertificateAuthority
from scepd.ca.publisher import CrlPublisher
from scepd.challenge.anyof import FirstMatching
from scepd.challenge.onetime import OneTimeChallenge
from scepd.challenge.renewal import SignerIsIssuedCertificate
from scepd.challenge.static import StaticChallenge
from scepd.config import Config, Endpoint, IntuneConfig, read_secret
from scepd.enroll.pipeline import Step, compose
from scepd.enroll.service import ScepService
from scepd.enroll.steps import IdempotentRetry, SignCertificate, StoreIssued
from scepd.http.app import LEGACY_PATH, Background, Site, create_app
from scepd.intune.auth import ClientCertificate, ClientSecret, Credential
from scepd.intune.client import IntuneClient
from scepd.intune.revocation import RevocationSync
from scepd.intune.step import IntuneChallenge
from scepd.keys.base import HashName
from scepd.keys.pkcs11 import TokenConfig, TokenPool
from scepd.keys.uri import Pkcs11Uri
from scepd.profiles import ProfileStep
from scepd.store.base import Store
from scepd.store.sqlite import SqliteStore

log = logging.getLogger("scepd")


def token_config(config: Config) -> TokenConfig:
    if config.token.softhsm2_conf:
        # SoftHSM2 reads this when the module initialises, in this process and in workers.
        os.environ["SOFTHSM2_CONF"] = config.token.softhsm2_conf
    return TokenConfig(
        module=config.token.module,
        token_label=config.token.label,
        pin=read_secret(config.token.pin_source),
        workers=config.token.workers,
        softhsm2_conf=config.token.softhsm2_conf,
    )


def key_label(uri: str) -> str:
    parsed = Pkcs11Uri.parse(uri)
    if not parsed.object:
        raise ValueError(f"{uri}: the key URI must name the object (object=...)")
    return parsed.object


def capabilities(config: Config) -> tuple[str, ...]:
    """GetCACaps: only what scepd really does."""
    caps = ["POSTPKIOperation", "SHA-256", "SHA-512", "AES", "DES3", "SCEPStandard", "Renewal"]
    if config.allow_sha1:
        caps.insert(1, "SHA-1")
    return tuple(caps)


def load_ca(config: Config, pool: TokenPool) -> CertificateAuthority:
    cert = x509.load_pem_x509_certificate(config.ca.certificate.read_bytes())
    signer = pool.key(key_label(config.ca.key))
    if signer.public_key != cert.public_key():
        raise ValueError(f"ca.certificate {config.ca.certificate} does not match the key {config.ca.key}")
    ra_cert, ra_key = cert, signer
    if config.ca.ra_key and config.ca.ra_certificate:
        ra_cert = x509.load_pem_x509_certificate(config.ca.ra_certificate.read_bytes())
        ra_key = pool.key(key_label(config.ca.ra_key))
        if ra_key.public_key != ra_cert.public_key():
            raise ValueError("ca.ra_certificate does not match ca.ra_key")
    return CertificateAuthority(
        certificate=cert, signer=signer, ra_certificate=ra_cert, ra_key=ra_key,  # type: ignore[arg-type]
        hash=HashName(config.ca.hash),
        crl_url=config.ca.crl_url, ocsp_url=config.ca.ocsp_url, issuer_url=config.ca.issuer_url,
    )


def challenge_step(
    config: Config, endpoint: Endpoint, ca: CertificateAuthority, store: Store, intune: Step | None = None
) -> Step | None:
    if endpoint.challenge == "intune":
        assert intune is not None  # config.parse requires [intune] for such endpoints
        primary: Step | None = intune
    elif endpoint.challenge == "static":
        assert config.static_challenge_source is not None  # config.parse guarantees it
        primary = StaticChallenge(read_secret(config.static_challenge_source))
    elif endpoint.challenge == "onetime":
        primary = OneTimeChallenge(store)
    else:
        primary = None
    if not endpoint.renewal:
        return primary
    renewal = SignerIsIssuedCertificate(store, ca.certificate)
    return FirstMatching(renewal, primary) if primary is not None else renewal


def build_services(
    config: Config, ca: CertificateAuthority, store: Store, intune: Step | None = None,
    crl: CrlPublisher | None = None,
) -> dict[str, ScepService]:
    services: dict[str, ScepService] = {}
    for endpoint in config.endpoints:
        steps: list[Step] = []
        challenge = challenge_step(config, endpoint, ca, store, intune)
        if challenge is not None:
            steps.append(challenge)
        steps += [
            ProfileStep(config.profiles[endpoint.profile]),
            IdempotentRetry(store),
            StoreIssued(store),
        ]
        chain = compose(steps, SignCertificate(ca, config.profiles))
        services[endpoint.path] = ScepService(
            ca=ca, store=store, chain=chain, endpoint=endpoint.name,
            challenge_mode=endpoint.challenge, allow_sha1=config.allow_sha1,
            allow_single_des=config.allow_single_des, crl=crl,
        )
    if config.legacy_path and LEGACY_PATH not in services:
        services[LEGACY_PATH] = services[config.endpoints[0].path]
    return services


def intune_credential(settings: IntuneConfig, pool: TokenPool) -> Credential:
    if settings.client_secret_source is not None:
        return ClientSecret(read_secret(settings.client_secret_source))
    assert settings.client_certificate is not None and settings.client_key is not None
    certificate = x509.load_pem_x509_certificate(settings.client_certificate.read_bytes())
    signer = pool.key(key_label(settings.client_key))
    if signer.public_key != certificate.public_key():
        raise ValueError("intune.client_certificate does not match intune.client_key")
    return ClientCertificate(certificate, signer)


def intune_client(settings: IntuneConfig, pool: TokenPool, http: httpx.AsyncClient) -> IntuneClient:
    return IntuneClient(settings.client, intune_credential(settings, pool), http)


@asynccontextmanager
async def open_site(config: Config) -> AsyncIterator[Site]:
    async with TokenPool.open(token_config(config)) as pool:
        async with SqliteStore.open(config.store_path) as store, httpx.AsyncClient() as http:
            ca = load_ca(config, pool)
            intune: IntuneChallenge | None = None
            background: list[Background] = []
            crl = CrlPublisher(
                ca, store, lifetime=config.crl.lifetime, file=config.crl.file,
                check_interval=config.crl.check_interval_seconds,
            )
            background.append(crl.run)
            if config.intune is not None:
                client = intune_client(config.intune, pool, http)
                issuer = ca.certificate.subject.rfc4514_string()
                intune = IntuneChallenge(client, store, certificate_authority=issuer)
                sync = RevocationSync(
                    client,
                    store,
                    issuer_name=config.intune.revocation_issuer_name or issuer,
                    interval=config.intune.revocation_interval_seconds,
                    batch=config.intune.revocation_batch,
                    on_revoked=crl.refresh,
                )
                background.append(sync.run)
            yield Site(
                ca=ca,
                services=build_services(config, ca, store, intune, crl),
                caps=capabilities(config),
                max_message_bytes=config.max_message_bytes,
                background=tuple(background),
                crl=crl,
                crl_path=config.crl.path,
            )


def hypercorn_config(config: Config, host: str | None = None, port: int | None = None) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{host or config.listen_host}:{config.listen_port if port is None else port}"]
    hc.accesslog = None
    # A GET PKIOperation carries the whole request in the query: certmonger sends several kB.
    hc.h11_max_incomplete_size = config.max_message_bytes * 2
    hc.graceful_timeout = 10
    return hc


async def serve(
    config: Config,
    *,
    port: int | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or `shutdown` is set; reports the bound URLs on start."""
    async with open_site(config) as site, trio.open_nursery() as nursery:
        for task in site.background:
            await nursery.start(task)
        app = create_app(site)
        trigger = shutdown.wait if shutdown is not None else None
        await hypercorn_serve(
            app, hypercorn_config(config, port=port), shutdown_trigger=trigger, task_status=task_status  # type: ignore[arg-type]
        )
        # hypercorn has drained its connections: the background loops go with it.
        nursery.cancel_scope.cancel()
