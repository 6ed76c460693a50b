"""One TOML file configures the daemon; errors name the key and the reason.

Secrets never live in the file: the token PIN and the static challenge are
*sources* (`file:/path`, `env:NAME`, `credential:NAME` for systemd's
LoadCredential), read when the daemon starts. Relative paths are resolved
against the directory of the config file, so a config next to its state works
from any working directory.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from cryptography import x509

from scepd import oids
from scepd.enroll.profiles import (
    CERT_TYPES,
    CSR_HASHES,
    KEY_TYPES,
    KEY_USAGES,
    ON_DISALLOWED,
    SAN_FORMS,
    SUBJECT_ATTRIBUTES,
    Profile,
)
from scepd.intune import contract
from scepd.intune.settings import DEFAULT_PROVIDER_NAME, IntuneSettings
from scepd.keys.uri import Pkcs11UriError, TokenIdentity, key_on_token
from scepd.logs import event_text

CHALLENGE_MODES = ("static", "onetime", "intune", "none")


class ConfigError(ValueError):
    """An invalid configuration: `key` is the dotted TOML path at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class TokenSettings:
    module: str
    label: str
    pin_source: str
    workers: int
    softhsm2_conf: str | None
    tpm2_pkcs11_store: str | None = None  # tpm2-pkcs11's store directory (a TPM token, docs/keys.md)
    tpm2_tcti: str | None = None  # how tpm2-pkcs11 reaches the TPM, e.g. device:/dev/tpmrm0
    timeout: float = 30.0  # seconds a token call may take before the request gets 503 (a frozen TPM)


@dataclass(frozen=True)
class CaSettings:
    key: str
    certificate: Path
    ra_key: str | None
    ra_certificate: Path | None
    hash: str
    crl_url: str | None = None  # put into issued certificates as CRL distribution point
    ocsp_url: str | None = None  # authority information access: OCSP responder
    issuer_url: str | None = None  # authority information access: CA issuers
    next_certificate: Path | None = None  # rollover CA certificate (and new RA), served by GetNextCACert
    expiry_warning_days: int = 30  # warn (log) when the CA certificate ends within this many days


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    challenge: str
    profile: str
    renewal: bool  # accept a request signed by a valid certificate this CA issued


@dataclass(frozen=True)
class IntuneConfig:
    """The [intune] table: the Entra app, where to reach Entra, Graph and Intune, and revocation polling."""

    client: IntuneSettings
    client_secret_source: str | None  # file:/env:/credential:, never the secret
    client_certificate: Path | None  # with client_key: a JWT assertion signed on the token
    client_key: str | None  # PKCS#11 URI
    revocation_interval_seconds: float
    revocation_batch: int
    revocation_issuer_name: str | None  # None: the CA certificate's subject
    proxy: str | None = None  # http(s)://host:port for Entra, Graph and Intune; None: the environment's
    proxy_credentials_source: str | None = None  # file:/env:/credential: holding "user:password"
    ca_bundle: Path | None = None  # PEM roots to trust instead of the system's (TLS-inspecting proxies)


@dataclass(frozen=True)
class CrlSettings:
    """The [crl] table: where the daemon serves its CRL and how often it re-signs it."""

    path: str = "/crl/ca.crl"
    lifetime: dt.timedelta = dt.timedelta(hours=24)
    file: Path | None = None  # on-disk copy of the latest CRL (DER, PEM if it ends in .pem)
    check_interval_seconds: float = 10.0  # how often to look for revocations made elsewhere


@dataclass(frozen=True)
class MetricsSettings:
    """The [metrics] table: the operator's listener (Prometheus /metrics, /healthz, /readyz)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class Config:
    path: Path
    listen_host: str
    listen_port: int
    max_message_bytes: int
    legacy_path: bool
    token: TokenSettings
    ca: CaSettings
    store_path: Path | None  # the SQLite file; None when `store_url` names a PostgreSQL database
    allow_sha1: bool
    allow_single_des: bool
    static_challenge_source: str | None
    onetime_ttl: dt.timedelta
    endpoints: tuple[Endpoint, ...]
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    intune: IntuneConfig | None = None
    crl: CrlSettings = field(default_factory=CrlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    processes: int = 1  # serving processes on the one listening socket (scepd.serving)
    store_url: str | None = None  # postgresql://... (docs/storage.md); exclusive with store_path
    # This node among several on one store (scepd.leadership): the holder name of its leader lease.
    node_name: str = field(default_factory=socket.gethostname)
    leader_lease_seconds: float = 30.0  # how long a node leads the background loops without renewing

    @property
    def store_location(self) -> str | Path:
        """What `scepd.store.backends.open_store` opens: the PostgreSQL URL, or else the SQLite file."""
        if self.store_url is not None:
            return self.store_url
        assert self.store_path is not None  # load() requires one of the two
        return self.store_path


def read_secret(source: str, base: Path | None = None) -> str:
    """Resolve `file:PATH`, `env:NAME` or `credential:NAME` to the secret; never logs it.

    The one secret reader (token PIN, static challenge, Intune client secret,
    proxy credentials). A source that names nothing, and a credential name
    that is a path ($CREDENTIALS_DIRECTORY holds files, nothing below or
    above it), are refused rather than read from somewhere unexpected.
    """
    kind, _, rest = source.partition(":")
    if kind not in ("file", "env", "credential"):
        raise ConfigError(source, "a secret source must start with file:, env: or credential:")
    if not rest:
        raise ConfigError(source, f"a {kind}: secret source must name a {'path' if kind == 'file' else 'name'}")
    if kind == "file":
        path = Path(rest)
        if base is not None and not path.is_absolute():
            path = base / path
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    if kind == "env":
        try:
            return os.environ[rest]
        except KeyError:
            raise ConfigError(source, f"environment variable {rest} is not set") from None
    if "/" in rest or rest in (".", ".."):
        raise ConfigError(source, "a credential name is a file name in $CREDENTIALS_DIRECTORY, not a path")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(source, "CREDENTIALS_DIRECTORY is not set (no systemd credentials)")
    return (Path(directory) / rest).read_text(encoding="utf-8").rstrip("\r\n")


@dataclass(frozen=True)
class KeyRead:
    """One key the loader reads: its dotted name, the TOML type it demands and its default (`...`: required)."""

    key: str
    kind: type | tuple[type, ...]
    default: Any


# Set by `keys_read` only: every key `parse` reads is appended, with its type and default.
_reads: list[KeyRead] | None = None


def keys_read(data: Mapping[str, Any], path: Path) -> list[KeyRead]:
    """Every key `parse(data, path)` reads, in order, with the type and default the loader itself uses.

    The configuration reference (docs/configuration.md, scepd.config_reference) is built from this, so
    it names exactly the keys the loader accepts and the defaults it applies.
    """
    global _reads
    _reads = []
    try:
        parse(data, path)
        return _reads
    finally:
        _reads = None


class _Reader:
    """Typed access to a TOML table that reports the dotted key on error."""

    def __init__(self, table: Mapping[str, Any], prefix: str) -> None:
        self.table = table
        self.prefix = prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def note(self, name: str, kind: type | tuple[type, ...], default: Any) -> None:
        """Mark `name` as accepted here (and record it while `keys_read` runs)."""
        self.seen.add(name)
        if _reads is not None:
            _reads.append(KeyRead(self.key(name), kind, default))

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.note(name, kind, default)
        if name not in self.table:
            if default is ...:
                raise ConfigError(self.key(name), "is required")
            return default
        value = self.table[name]
        if isinstance(value, bool) and kind in (int, float):
            raise ConfigError(self.key(name), f"must be {kind.__name__}, not a boolean")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(self.key(name), f"must be {expected}, got {type(value).__name__}")
        return value

    def sub(self, name: str) -> _Reader:
        return _Reader(self.get(name, dict, {}), self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown setting")


def _secret_source(r: _Reader, name: str) -> str | None:
    value = r.get(name, str, None)
    if value is not None and value.split(":", 1)[0] not in ("file", "env", "credential"):
        raise ConfigError(
            r.key(name), "must be a secret source (file:PATH, env:NAME or credential:NAME), never the secret itself"
        )
    return cast("str | None", value)


def _profile(name: str, r: _Reader) -> Profile:
    days = r.get("validity_days", int, 365)
    if not 1 <= days <= 3650:
        raise ConfigError(r.key("validity_days"), "must be between 1 and 3650")
    usage = r.get("key_usage", list, ["digital_signature", "key_encipherment"])
    for u in usage:
        if u not in KEY_USAGES:
            raise ConfigError(r.key("key_usage"), f"unknown usage {u!r}; choose from {', '.join(KEY_USAGES)}")
    eku = r.get("extended_key_usage", list, [oids.EKU_CLIENT_AUTH])
    for oid in eku:
        if not isinstance(oid, str) or not all(p.isdigit() for p in oid.split(".")):
            raise ConfigError(r.key("extended_key_usage"), f"{oid!r} is not a dotted OID")
    min_rsa = r.get("min_rsa_bits", int, 2048)
    if min_rsa < 2048:
        raise ConfigError(r.key("min_rsa_bits"), "must be at least 2048")
    min_ec = r.get("min_ec_bits", int, 256)
    if min_ec not in (256, 384, 521):
        raise ConfigError(r.key("min_ec_bits"), "must be 256, 384 or 521 (P-256 and up)")
    cert_type = r.get("type", str, "device")
    if cert_type not in CERT_TYPES:
        raise ConfigError(r.key("type"), f"must be one of {', '.join(CERT_TYPES)}")
    on_disallowed = r.get("on_disallowed", str, "refuse")
    if on_disallowed not in ON_DISALLOWED:
        raise ConfigError(r.key("on_disallowed"), f"must be one of {', '.join(ON_DISALLOWED)}")
    subject_accept = _choices(r, "subject_accept", SUBJECT_ATTRIBUTES, None)
    suffix = r.get("subject_suffix", str, "")
    if suffix:
        try:
            x509.Name.from_rfc4514_string(suffix)
        except ValueError as e:
            raise ConfigError(r.key("subject_suffix"), f"not an RFC 4514 name: {e}") from None
    ttl_hours = r.get("pending_ttl_hours", (int, float), 72)
    if not 0 < ttl_hours <= 24 * 90:
        raise ConfigError(r.key("pending_ttl_hours"), "must be more than 0 and at most 2160 (90 days)")
    profile = Profile(
        name=name,
        certificate_type=cert_type,
        validity=dt.timedelta(days=days),
        key_usage=frozenset(usage),
        extended_key_usage=tuple(eku),
        min_rsa_bits=min_rsa,
        min_ec_bits=min_ec,
        allowed_key_types=_choices(r, "key_types", KEY_TYPES, KEY_TYPES),
        allowed_csr_hashes=_choices(r, "csr_hashes", CSR_HASHES, CSR_HASHES),
        copy_san=r.get("copy_san", bool, True),
        subject_accept=subject_accept,
        subject_suffix=suffix,
        san_accept=_choices(r, "san_accept", SAN_FORMS, SAN_FORMS),
        san_uri_prefixes=tuple(_strings(r, "san_uri_prefixes")),
        san_dns_suffixes=tuple(s.lower().lstrip(".") for s in _strings(r, "san_dns_suffixes")),
        on_disallowed=on_disallowed,
        revoke_superseded=r.get("revoke_superseded", bool, False),
        approval=r.get("approval", bool, False),
        pending_ttl=dt.timedelta(hours=ttl_hours),
    )
    r.done()
    return profile


def _strings(r: _Reader, name: str) -> list[str]:
    values = r.get(name, list, [])
    if not all(isinstance(v, str) and v for v in values):
        raise ConfigError(r.key(name), "must be a list of non-empty strings")
    return cast(list[str], values)


def _choices(r: _Reader, name: str, allowed: Any, default: Any) -> Any:
    """A list whose every entry is one of `allowed`, as a frozenset; `default` when absent."""
    if name not in r.table:
        r.note(name, list, default)
        return frozenset(default) if default is not None else None
    values = _strings(r, name)
    for v in values:
        if v not in allowed:
            raise ConfigError(r.key(name), f"unknown value {v!r}; choose from {', '.join(allowed)}")
    return frozenset(values)


def _url(r: _Reader, name: str, default: str) -> str:
    value = r.get(name, str, default)
    if not value.startswith(("https://", "http://")):
        raise ConfigError(r.key(name), "must be an http(s) URL")
    return cast(str, value)


def _intune(r: _Reader, resolve: Any) -> IntuneConfig:
    secret = _secret_source(r, "client_secret")
    if secret and secret.startswith("file:"):
        secret = f"file:{resolve(secret[5:])}"
    cert = r.get("client_certificate", str, None)
    key = r.get("client_key", str, None)
    if (cert is None) != (key is None):
        raise ConfigError(r.key("client_key"), "client_certificate and client_key go together")
    if key is not None and not key.startswith("pkcs11:"):
        raise ConfigError(r.key("client_key"), "must be a PKCS#11 URI (the key stays on the token)")
    if (secret is None) == (cert is None):
        raise ConfigError(r.key("client_secret"), "give either client_secret or client_certificate + client_key")
    timeout = r.get("timeout_seconds", (int, float), 30)
    if not 0 < timeout <= 120:
        raise ConfigError(r.key("timeout_seconds"), "must be between 0 and 120")
    retries = r.get("retries", int, 2)
    if not 0 <= retries <= 5:
        raise ConfigError(r.key("retries"), "must be between 0 and 5")
    interval = r.get("revocation_interval_seconds", (int, float), 3600)
    if not 0.1 <= interval <= 86400:
        raise ConfigError(r.key("revocation_interval_seconds"), "must be between 0.1 and 86400")
    batch = r.get("revocation_batch", int, 100)
    if not 1 <= batch <= contract.MAX_REVOCATION_BATCH:
        raise ConfigError(r.key("revocation_batch"), f"must be between 1 and {contract.MAX_REVOCATION_BATCH}")
    budget = r.get("notification_budget_seconds", (int, float), 100)
    if not 1 <= budget <= 600:
        raise ConfigError(r.key("notification_budget_seconds"), "must be between 1 and 600")
    algorithm = r.get("assertion_algorithm", str, "PS256")
    if algorithm not in ("PS256", "RS256"):
        raise ConfigError(r.key("assertion_algorithm"), "must be PS256 or RS256")
    proxy = r.get("proxy", str, None)
    if proxy is not None:
        parts = urlsplit(proxy)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(r.key("proxy"), "must be an http(s)://host:port URL")
        if parts.username or parts.password:
            raise ConfigError(r.key("proxy"), "carries no credentials; put user:password in proxy_credentials")
    proxy_credentials = _secret_source(r, "proxy_credentials")
    if proxy_credentials and proxy_credentials.startswith("file:"):
        proxy_credentials = f"file:{resolve(proxy_credentials[5:])}"
    if proxy_credentials is not None and proxy is None:
        raise ConfigError(r.key("proxy_credentials"), "needs intune.proxy")
    ca_bundle = r.get("ca_bundle", str, None)
    config = IntuneConfig(
        client=IntuneSettings(
            tenant=r.get("tenant", str),
            client_id=r.get("client_id", str),
            provider_name=r.get("provider_name", str, DEFAULT_PROVIDER_NAME),
            authority=_url(r, "authority", contract.DEFAULT_AUTHORITY),
            graph_url=_url(r, "graph_url", contract.DEFAULT_GRAPH_URL),
            intune_resource_url=_url(r, "intune_resource_url", contract.DEFAULT_INTUNE_RESOURCE_URL),
            intune_app_id=r.get("intune_app_id", str, contract.INTUNE_APP_ID),
            timeout=float(timeout),
            retries=retries,
            notification_budget=float(budget),
            assertion_algorithm=algorithm,
        ),
        client_secret_source=secret,
        client_certificate=resolve(cert) if cert else None,
        client_key=key,
        revocation_interval_seconds=float(interval),
        revocation_batch=batch,
        revocation_issuer_name=r.get("revocation_issuer_name", str, None),
        proxy=proxy,
        proxy_credentials_source=proxy_credentials,
        ca_bundle=resolve(ca_bundle) if ca_bundle else None,
    )
    r.done()
    return config


def _optional_url(r: _Reader, name: str) -> str | None:
    value: str | None = r.get(name, str, None)
    if value is not None and not value.startswith(("http://", "https://", "ldap://")):
        raise ConfigError(r.key(name), "must be an http(s) or ldap URL")
    return value


def check_store_url(url: str, key: str = "store.url") -> None:
    """A PostgreSQL URL that carries no password: a config file (or a command line, which `ps` shows) is
    readable by more than the secret's owner. libpq finds the password itself (PGPASSFILE, ~/.pgpass) or uses
    a client certificate (sslcert=). `key` names where the URL came from in the error."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(key, "must be a postgresql:// URL")
    query = parse_qs(parts.query)
    if parts.password is not None or "password" in query:
        raise ConfigError(key, "must not contain a password (use a password file or a client certificate)")
    if importlib.util.find_spec("psycopg") is None:
        # An optional extra: say so here rather than fail later at the first connection with an ImportError.
        raise ConfigError(key, "needs the PostgreSQL driver psycopg: install scepd with its extra, scepd[postgres]")


def _crl(r: _Reader, resolve: Any) -> CrlSettings:
    path = r.get("path", str, CrlSettings.path)
    if not path.startswith("/"):
        raise ConfigError(r.key("path"), "must start with /")
    hours = r.get("lifetime_hours", (int, float), 24)
    if not 0 < hours <= 24 * 366:
        raise ConfigError(r.key("lifetime_hours"), "must be more than 0 and at most 8784 (a year)")
    check = r.get("check_interval_seconds", (int, float), 10)
    if not 0.1 <= check <= 3600:
        raise ConfigError(r.key("check_interval_seconds"), "must be between 0.1 and 3600")
    file = r.get("file", str, None)
    settings = CrlSettings(
        path=path,
        lifetime=dt.timedelta(hours=hours),
        file=resolve(file) if file else None,
        check_interval_seconds=float(check),
    )
    r.done()
    return settings


def _key_on_token(key: str, uri: str | None, token: TokenSettings) -> None:
    """A key URI must name an object, and no other token than [token] (`scepd config check` says so)."""
    if uri is None:
        return
    try:
        key_on_token(uri, TokenIdentity(label=token.label, module=token.module))
    except Pkcs11UriError as e:
        raise ConfigError(key, str(e)) from None


def parse(data: Mapping[str, Any], path: Path) -> Config:
    """Validate a TOML document already loaded into `data`."""
    base = path.parent
    root = _Reader(data, "")

    def resolve(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else (base / q)

    server = root.sub("server")
    listen = server.get("listen", str, "127.0.0.1:8080")
    host, sep, port_s = listen.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError("server.listen", "must be HOST:PORT")
    max_bytes = server.get("max_message_bytes", int, 256 * 1024)
    if not 16 * 1024 <= max_bytes <= 16 * 1024 * 1024:
        raise ConfigError("server.max_message_bytes", "must be between 16 KiB and 16 MiB")
    legacy = server.get("legacy_path", bool, True)
    processes = server.get("processes", int, 1)
    if not 1 <= processes <= 64:
        raise ConfigError("server.processes", "must be between 1 and 64")
    node_name = server.get("node_name", str, None)
    if node_name is None:
        node_name = socket.gethostname()
    elif not node_name or len(node_name) > 100 or not node_name.isprintable():
        raise ConfigError("server.node_name", "must be 1 to 100 printable characters")
    lease = server.get("leader_lease_seconds", (int, float), 30)
    if not 1 <= lease <= 600:
        raise ConfigError("server.leader_lease_seconds", "must be between 1 and 600")
    server.done()

    tok = root.sub("token")
    pin = _secret_source(tok, "pin")
    if pin is None:
        raise ConfigError("token.pin", "is required (file:PATH, env:NAME or credential:NAME)")
    conf = tok.get("softhsm2_conf", str, None)
    tpm_store = tok.get("tpm2_pkcs11_store", str, None)
    tpm_tcti = tok.get("tpm2_tcti", str, None)
    token_timeout = tok.get("timeout", (int, float), 30.0)
    if not 0.5 <= token_timeout <= 600:
        raise ConfigError("token.timeout", "must be between 0.5 and 600 seconds")
    workers = tok.get("workers", int, 0)
    if not 0 <= workers <= 64:
        raise ConfigError("token.workers", "must be between 0 (one in-process thread) and 64")
    token = TokenSettings(
        module=tok.get("module", str, "/usr/lib/softhsm/libsofthsm2.so"),
        label=tok.get("label", str),
        pin_source=pin if not pin.startswith("file:") else f"file:{resolve(pin[5:])}",
        workers=workers,
        softhsm2_conf=str(resolve(conf)) if conf else None,
        tpm2_pkcs11_store=str(resolve(tpm_store)) if tpm_store else None,
        tpm2_tcti=tpm_tcti,
        timeout=float(token_timeout),
    )
    tok.done()

    car = root.sub("ca")
    ca_key = car.get("key", str)
    ra_key = car.get("ra_key", str, None)
    ra_cert = car.get("ra_certificate", str, None)
    if (ra_key is None) != (ra_cert is None):
        raise ConfigError("ca.ra_key", "ra_key and ra_certificate go together")
    hash_name = car.get("hash", str, "sha256")
    if hash_name not in ("sha256", "sha384", "sha512"):
        raise ConfigError("ca.hash", "must be sha256, sha384 or sha512")
    for k, uri in (("key", ca_key), ("ra_key", ra_key)):
        if uri is not None and not uri.startswith("pkcs11:"):
            raise ConfigError(f"ca.{k}", "must be a PKCS#11 URI (pkcs11:object=...)")
        _key_on_token(f"ca.{k}", uri, token)
    next_cert = car.get("next_certificate", str, None)
    ca = CaSettings(
        key=ca_key,
        certificate=resolve(car.get("certificate", str)),
        ra_key=ra_key,
        ra_certificate=resolve(ra_cert) if ra_cert else None,
        hash=hash_name,
        crl_url=_optional_url(car, "crl_url"),
        ocsp_url=_optional_url(car, "ocsp_url"),
        issuer_url=_optional_url(car, "issuer_url"),
        next_certificate=resolve(next_cert) if next_cert else None,
        expiry_warning_days=car.get("expiry_warning_days", int, 30),
    )
    if not 1 <= ca.expiry_warning_days <= 7300:
        raise ConfigError("ca.expiry_warning_days", "must be between 1 and 7300 (20 years)")
    car.done()

    st = root.sub("store")
    store_file = st.get("path", str, None)
    store_url = st.get("url", str, None)
    st.done()
    if (store_file is None) == (store_url is None):
        raise ConfigError("store", "set exactly one of path (SQLite) and url (PostgreSQL)")
    store_path = resolve(store_file) if store_file is not None else None
    if store_url is not None:
        check_store_url(store_url)

    crl = _crl(root.sub("crl"), resolve)

    mr = root.sub("metrics")
    metrics_listen = mr.get("listen", str, "127.0.0.1:9108")
    m_host, m_sep, m_port = metrics_listen.rpartition(":")
    if not m_sep or not m_host or not m_port.isdigit() or not 0 <= int(m_port) <= 65535:
        raise ConfigError("metrics.listen", "must be HOST:PORT")
    metrics = MetricsSettings(enabled=mr.get("enabled", bool, True), host=m_host, port=int(m_port))
    mr.done()

    sc = root.sub("scep")
    allow_sha1 = sc.get("allow_sha1", bool, True)
    allow_des = sc.get("allow_single_des", bool, False)
    sc.done()

    ch = root.sub("challenge")
    static_src = _secret_source(ch, "static")
    if static_src and static_src.startswith("file:"):
        static_src = f"file:{resolve(static_src[5:])}"
    ttl_minutes = ch.get("onetime_ttl_minutes", int, 60)
    if not 1 <= ttl_minutes <= 60 * 24 * 30:
        raise ConfigError("challenge.onetime_ttl_minutes", "must be between 1 and 43200")
    ch.done()

    intune = _intune(root.sub("intune"), resolve) if "intune" in data else None
    if intune is not None:
        _key_on_token("intune.client_key", intune.client_key, token)
    root.seen.add("intune")

    profs_r = root.sub("profiles")
    profiles: dict[str, Profile] = {}
    for name in profs_r.table:
        profiles[name] = _profile(name, profs_r.sub(name))
    profiles.setdefault("default", Profile())

    eps_r = root.sub("endpoints")
    endpoints: list[Endpoint] = []
    paths: set[str] = set()
    for name in eps_r.table or {"default": {}}:
        er = _Reader(eps_r.table.get(name, {}), f"endpoints.{name}")
        ep = Endpoint(
            name=name,
            path=er.get("path", str, "/scep"),
            challenge=er.get("challenge", str, "static"),
            profile=er.get("profile", str, "default"),
            # Intune renews by a fresh enrollment with a fresh challenge (contract §9): a request
            # signed by an old certificate must not skip Intune's validation unless asked for.
            renewal=er.get("renewal", bool, er.table.get("challenge", "static") != "intune"),
        )
        er.done()
        if not ep.path.startswith("/"):
            raise ConfigError(er.key("path"), "must start with /")
        if ep.path in paths:
            raise ConfigError(er.key("path"), f"{ep.path} is used by another endpoint")
        paths.add(ep.path)
        if ep.challenge not in CHALLENGE_MODES:
            raise ConfigError(er.key("challenge"), f"must be one of {', '.join(CHALLENGE_MODES)}")
        if ep.challenge == "static" and not static_src:
            raise ConfigError(er.key("challenge"), "static needs challenge.static (a secret source)")
        if ep.challenge == "intune" and intune is None:
            raise ConfigError(er.key("challenge"), "intune needs an [intune] table")
        if ep.profile not in profiles:
            raise ConfigError(er.key("profile"), f"no profile named {ep.profile!r}")
        if ep.challenge == "intune" and profiles[ep.profile].approval:
            # A held request would be issued on a later poll, after Intune's validation
            # and without the success notification the contract requires before delivery.
            raise ConfigError(
                er.key("profile"), f"profile {ep.profile!r} requires approval, which Intune endpoints cannot use"
            )
        endpoints.append(ep)
    root.seen.update({"endpoints", "profiles"})
    if crl.path in paths:
        raise ConfigError("crl.path", f"{crl.path} is already a SCEP endpoint path")
    root.done()

    return Config(
        path=path,
        listen_host=host,
        listen_port=int(port_s),
        max_message_bytes=max_bytes,
        legacy_path=legacy,
        token=token,
        ca=ca,
        store_path=store_path,
        store_url=store_url,
        allow_sha1=allow_sha1,
        allow_single_des=allow_des,
        static_challenge_source=static_src,
        onetime_ttl=dt.timedelta(minutes=ttl_minutes),
        endpoints=tuple(endpoints),
        profiles=profiles,
        intune=intune,
        crl=crl,
        metrics=metrics,
        processes=processes,
        node_name=node_name,
        leader_lease_seconds=float(lease),
    )


def load(path: Path) -> Config:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from None
    return parse(data, path.resolve())


def key_layout_warnings(config: Config) -> list[str]:
    """What the file alone says is weaker than the default key layout (docs/keys.md), one log event each.

    Without an RA the CA key opens envelopes, so it must be able to decrypt
    what anyone sends: a layout of earlier versions that keeps working.
    What only the token knows (CKA_DECRYPT, the rejection secret) is checked
    by scepd.wiring.key_warnings.
    """
    if config.ca.ra_key is None:
        return [
            event_text(
                "ca_key_opens_envelopes",
                key=config.ca.key,
                reason="no RA configured (ca.ra_key)",
                remedy=f"scepd ca ra-init --config {config.path}",
            )
        ]
    return []
