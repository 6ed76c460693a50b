"""Build scepd's parts from a Config: the token pool and its keys, the CA, the store, the
Intune client and the chain of enrollment steps per endpoint.

The one place that knows every concrete class. Both the daemon (scepd.server,
which adds the listeners, signals and systemd around `open_site`) and the
command line (scepd.cli) build what they need here, so a command and the
daemon always read the config the same way. Everything `open_site` builds
lives inside its context, so shutdown closes the token sessions and the store
in order.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepd import metrics
from scepd.ca.authority import CertificateAuthority
from scepd.ca.expiry import watch_expiry
from scepd.ca.publisher import CrlPublisher
from scepd.challenge.anyof import FirstMatching
from scepd.challenge.onetime import OneTimeChallenge
from scepd.challenge.renewal import SignerIsIssuedCertificate
from scepd.challenge.static import StaticChallenge
from scepd.clock import utc_now
from scepd.config import Config, ConfigError, Endpoint, IntuneConfig, key_layout_warnings, read_secret
from scepd.enroll.approval import ApprovalGate, expire_pending_loop, expiry_interval
from scepd.enroll.pipeline import Step, compose
from scepd.enroll.profiles import ProfileStep
from scepd.enroll.service import ScepService
from scepd.enroll.steps import IdempotentRetry, SignCertificate, StoreIssued, SupersedeRenewed
from scepd.errors import ExitCode, StartupError
from scepd.health import Readiness
from scepd.intune.auth import ClientCertificate, ClientSecret, Credential, PssSigner
from scepd.intune.client import IntuneClient
from scepd.intune.http import http_client
from scepd.intune.revocation import RevocationSync
from scepd.intune.step import IntuneChallenge
from scepd.keys.base import HashName, KeyBackendError
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.key import Pkcs11Key
from scepd.keys.pkcs11.pool import TokenPool
from scepd.keys.tpm import is_tpm_module
from scepd.keys.uri import Pkcs11Uri, Pkcs11UriError, TokenIdentity, key_on_token
from scepd.leadership import Leadership, holder_id
from scepd.logs import event, event_text
from scepd.nodekeys import NodeKeysWatch, fingerprint
from scepd.store.backends import open_store
from scepd.store.roles import Store

if TYPE_CHECKING:
    from scepd.http.app import Background, Site

# The HTTP app (Quart, Hypercorn: most of a start's import time) is imported where the services are built, so
# the commands that only open the token or read the CA (`config check`, `ca`, `init`, `crl export`) skip it.

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
        tpm2_pkcs11_store=config.token.tpm2_pkcs11_store,
        tpm2_tcti=config.token.tpm2_tcti,
        timeout=config.token.timeout,
    )


def key_label(uri: str) -> str:
    parsed = Pkcs11Uri.parse(uri)
    if not parsed.object:
        raise ValueError(f"{uri}: the key URI must name the object (object=...)")
    return parsed.object


async def check_key_uris(config: Config, pool: TokenPool) -> None:
    """Refuse a key URI whose token attributes (token=, manufacturer=, serial=, model=)
    describe another token than the one the pool opened, instead of ignoring them."""
    status, info = await pool.call("token_info")
    if status != "ok":
        raise KeyBackendError(f"token {config.token.label!r}: {info}")
    token = TokenIdentity(module=config.token.module, **info)
    keys = [("ca.key", config.ca.key), ("ca.ra_key", config.ca.ra_key)]
    if config.intune is not None:
        keys.append(("intune.client_key", config.intune.client_key))
    for name, uri in keys:
        if uri is not None:
            try:
                key_on_token(uri, token)
            except Pkcs11UriError as e:
                raise ConfigError(name, str(e)) from None


def capabilities(config: Config) -> tuple[str, ...]:
    """GetCACaps: only what scepd really does."""
    caps = ["POSTPKIOperation", "SHA-256", "SHA-512", "AES", "DES3", "SCEPStandard", "Renewal"]
    if config.allow_sha1:
        caps.insert(1, "SHA-1")
    if config.ca.next_certificate is not None:
        caps.append("GetNextCACert")
    return tuple(caps)


def load_ca(config: Config, pool: TokenPool) -> CertificateAuthority:
    cert = x509.load_pem_x509_certificate(config.ca.certificate.read_bytes())
    signer = pool.key(key_label(config.ca.key))
    if signer.public_key != cert.public_key():
        raise ValueError(f"ca.certificate {config.ca.certificate} does not match the key {config.ca.key}")
    ra_cert, ra_key = cert, signer
    if not (config.ca.ra_key and config.ca.ra_certificate) and not signer.can_decrypt:
        # A sign-only CA key (what `scepd init` makes) with the RA lines lost from the config:
        # every envelope would fail, so say why now rather than answer each request with a fault.
        raise ValueError(
            f"the CA key {config.ca.key} cannot open envelopes (CKA_DECRYPT is false) and no RA is "
            "configured: set ca.ra_key and ca.ra_certificate (scepd init writes them), or run "
            "`scepd ca ra-init`"
        )
    if config.ca.ra_key and config.ca.ra_certificate:
        ra_cert = x509.load_pem_x509_certificate(config.ca.ra_certificate.read_bytes())
        ra_key = pool.key(key_label(config.ca.ra_key))
        if ra_key.public_key != ra_cert.public_key():
            raise ValueError("ca.ra_certificate does not match ca.ra_key")
    return CertificateAuthority(
        certificate=cert,
        signer=signer,
        ra_certificate=ra_cert,
        ra_key=ra_key,
        hash=HashName(config.ca.hash),
        crl_url=config.ca.crl_url,
        ocsp_url=config.ca.ocsp_url,
        issuer_url=config.ca.issuer_url,
        next_chain_der=load_next_chain(config, cert),
    )


async def key_warnings(config: Config, ca: CertificateAuthority) -> list[str]:
    """Where the key layout in use is weaker than the default (docs/keys.md): one structured line each.

    Logged at start-up and printed by `scepd config check`; the remedy named
    is the one command that fixes it.
    """
    out = key_layout_warnings(config)
    if ca.has_ra and isinstance(ca.signer, Pkcs11Key) and ca.signer.can_decrypt:
        out.append(
            event_text(
                "ca_key_can_decrypt",
                key=ca.signer.label,
                reason="CKA_DECRYPT is true on the token, though the RA opens the envelopes",
                remedy=f"scepd ca ra-init --restrict-ca-key --config {config.path}",
            )
        )
    if isinstance(ca.ra_key, Pkcs11Key) and not await ca.ra_key.has_reject_secret():
        remedy = f"scepd ca ra-init --config {config.path}"
        if is_tpm_module(config.token.module):  # a TPM holds no secret keys: nothing to run (docs/keys.md)
            remedy = "none on a TPM token: each token session makes its own secret"
        out.append(
            event_text(
                "envelope_key_without_reject_secret",
                key=ca.ra_key.label,
                reason=f"no {ca.ra_key.label}.reject object on the token",
                remedy=remedy,
            )
        )
    return out


def load_next_chain(config: Config, current: x509.Certificate) -> tuple[bytes, ...]:
    """The rollover CA certificate (and new RA certificates) from ca.next_certificate, checked."""
    if config.ca.next_certificate is None:
        return ()
    certs = x509.load_pem_x509_certificates(config.ca.next_certificate.read_bytes())
    nxt = certs[0]
    try:
        is_ca = nxt.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"ca.next_certificate {config.ca.next_certificate}: the first certificate is not a CA")
    if nxt == current:
        raise ValueError(f"ca.next_certificate {config.ca.next_certificate} is the current CA certificate")
    if nxt.not_valid_before_utc > current.not_valid_after_utc:
        event(
            log,
            logging.WARNING,
            "next_ca_gap",
            next_not_before=nxt.not_valid_before_utc.isoformat(),
            current_not_after=current.not_valid_after_utc.isoformat(),
        )
    return tuple(c.public_bytes(Encoding.DER) for c in certs)


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
    config: Config,
    ca: CertificateAuthority,
    store: Store,
    intune: Step | None = None,
    crl: CrlPublisher | None = None,
) -> dict[str, ScepService]:
    from scepd.http.app import LEGACY_PATH

    services: dict[str, ScepService] = {}
    for endpoint in config.endpoints:
        steps: list[Step] = []
        challenge = challenge_step(config, endpoint, ca, store, intune)
        if challenge is not None:
            steps.append(challenge)
        profile = config.profiles[endpoint.profile]
        policy = ProfileStep(profile)
        # The store steps: what happens to a renewed certificate, retries, the durable record.
        record: list[Step] = [
            SupersedeRenewed(store, revoke=profile.revoke_superseded),
            IdempotentRetry(store),
            StoreIssued(store),
        ]
        issue = compose(record, SignCertificate(ca, config.profiles))
        # Polls of held requests are answered on every endpoint, so a request held
        # before a reload turned approval off can still be collected.
        approval = ApprovalGate(store, profile.pending_ttl, release=compose([policy], issue))
        steps += [policy, approval] if profile.approval else [policy]
        services[endpoint.path] = ScepService(
            ca=ca,
            store=store,
            chain=compose(steps, issue),
            endpoint=endpoint.name,
            challenge_mode=endpoint.challenge,
            allow_sha1=config.allow_sha1,
            allow_single_des=config.allow_single_des,
            crl=crl,
            approval=approval,
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
    algorithm = settings.client.assertion_algorithm
    if algorithm == "PS256" and not isinstance(signer, PssSigner):
        # A key backend without RSA-PSS (the PKCS#11 token has it): say so once, and keep authenticating.
        event(
            log,
            logging.WARNING,
            "intune_assertion_fallback",
            algorithm="RS256",
            reason="the key backend cannot sign RSA-PSS; intune.assertion_algorithm = RS256 silences this",
        )
        algorithm = "RS256"
    return ClientCertificate(certificate, signer, algorithm=algorithm)


def intune_client(settings: IntuneConfig, pool: TokenPool, http: httpx.AsyncClient) -> IntuneClient:
    return IntuneClient(settings.client, intune_credential(settings, pool), http)


def intune_http(settings: IntuneConfig | None) -> httpx.AsyncClient:
    """The HTTP client for every Intune call, through `intune.proxy` when one is set."""
    if settings is None:
        return httpx.AsyncClient()
    credentials = (
        read_secret(settings.proxy_credentials_source) if settings.proxy_credentials_source is not None else None
    )
    return http_client(proxy=settings.proxy, proxy_credentials=credentials, ca_bundle=settings.ca_bundle)


@asynccontextmanager
async def open_site(config: Config, *, primary: bool = True) -> AsyncIterator[Site]:
    """Everything one process serves with; `primary=False` for a serving process beside the primary
    (scepd.serving), which runs no background loop of its own but follows the primary's CRL.

    A primary runs the per-node loops itself and the once-per-deployment ones only while its node
    holds the leader lease (scepd.leadership); with SQLite it is the only node and runs them without one."""
    from scepd.http.app import Site

    async with TokenPool.open(token_config(config)) as pool:
        await check_key_uris(config, pool)
        # The daemon starts while a PostgreSQL database is unreachable, and serves 503s until it is back.
        store_cm = open_store(config.store_location, connect_later=True)
        async with store_cm as store, intune_http(config.intune) as http:
            try:
                ca = load_ca(config, pool)
            except ValueError as e:  # a certificate that is not for its key, or not a CA
                code = ExitCode.KEY_MISSING if "does not match" in str(e) else ExitCode.CONFIG_INVALID
                raise StartupError(code, str(e)) from e
            if primary:
                for warning in await key_warnings(config, ca):
                    log.warning(warning)
            intune: IntuneChallenge | None = None
            intune_check = None
            background: list[Background] = []
            crl = CrlPublisher(
                ca,
                store,
                lifetime=config.crl.lifetime,
                file=config.crl.file,
                check_interval=config.crl.check_interval_seconds,
            )
            # Once per deployment, on the node holding the leader lease (scepd.leadership): CRL signing,
            # the expiry of held requests, the Intune revocation sync. The other nodes' primaries, and
            # every serving process beside a primary, follow the CRL the leader signed.
            lead: list[Background] = [
                crl.run,
                partial(
                    expire_pending_loop,
                    store,
                    expiry_interval(p.pending_ttl for p in config.profiles.values() if p.approval),
                ),
            ]
            if primary:
                # Per node: the CA expiry warning and its gauges.
                background.append(
                    partial(
                        watch_expiry,
                        ca.certificate,
                        dt.timedelta(days=config.ca.expiry_warning_days),
                        rollover=bool(ca.next_chain_der),
                        clock=utc_now,
                        ra_certificate=ca.ra_certificate if ca.has_ra else None,
                    )
                )
            if config.intune is not None:
                client = intune_client(config.intune, pool, http)
                intune_check = client.check
                issuer = ca.certificate.subject.rfc4514_string()
                # One name both ways: Intune files revocation requests under the
                # issuingCertificateAuthority sent, and the sync filters on exactly it.
                intune = IntuneChallenge(
                    client, store, certificate_authority=issuer, issuing_authority=config.intune.revocation_issuer_name
                )
                sync = RevocationSync(
                    client,
                    store,
                    issuer_name=config.intune.revocation_issuer_name or issuer,
                    interval=config.intune.revocation_interval_seconds,
                    batch=config.intune.revocation_batch,
                    on_revoked=crl.refresh,
                )
                lead.append(sync.run)
            if primary and config.store_url is None:
                # SQLite: this is the one node. A lease would only make a daemon restarted after a crash
                # wait out its predecessor's before signing.
                metrics.LEADER.set(1)
                background.extend(lead)
            elif primary:
                leadership = Leadership(store, holder_id(config.node_name), lease=config.leader_lease_seconds)
                background.append(partial(leadership.run, lead, [crl.follow]))
                # Per node, leader or not: say so when another node on this database has other keys.
                keys = NodeKeysWatch(
                    store, config.node_name, partial(fingerprint, ca), lease=config.leader_lease_seconds
                )
                background.append(keys.run)
            else:
                background.append(crl.follow)

            async def refresh_metrics() -> None:
                now = utc_now()
                metrics.CA_CERT_EXPIRY_SECONDS.set((ca.certificate.not_valid_after_utc - now).total_seconds())
                metrics.RA_CERT_EXPIRY_SECONDS.set(
                    (ca.ra_certificate.not_valid_after_utc - now).total_seconds() if ca.has_ra else float("nan")
                )
                current = crl.current
                metrics.CRL_NEXT_UPDATE_SECONDS.set(
                    float("nan") if current is None else (current.next_update - now).total_seconds()
                )
                counts = await store.counts(now)
                for status, count in counts.certificates.items():
                    metrics.CERTIFICATES.labels(status).set(count)
                metrics.REQUESTS_PENDING.set(counts.pending)

            yield Site(
                ca=ca,
                services=build_services(config, ca, store, intune, crl),
                caps=capabilities(config),
                max_message_bytes=config.max_message_bytes,
                background=tuple(background),
                crl=crl,
                crl_path=config.crl.path,
                readiness=Readiness.build(token=pool.ready, store=store.ping, intune=intune_check),
                refresh_metrics=refresh_metrics,
                rebuild=lambda new: build_services(new, ca, store, intune, crl),
            )
