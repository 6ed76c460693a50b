"""The configuration reference (docs/configuration.md), generated from the loader itself.

Which keys exist, their TOML types and their defaults come from `scepd.config.keys_read`,
which runs the real loader over a configuration holding every table. Only the prose is
written here, one entry per key. Generating fails when the loader reads a key that has no
entry here, or when an entry names a key the loader does not read, so the page cannot
drift from the code: `tests/test_docs.py` regenerates it and compares.

    python -m scepd.config_reference            # rewrite docs/configuration.md
    python -m scepd.config_reference --check    # exit 1 if the committed page is stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scepd.config import KeyRead, keys_read

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

# A configuration with every table, named tables called NAME, so that the loader reads every key once.
# The values are placeholders: only what the loader reads matters, and secrets are sources, never read.
PROBE: dict[str, Any] = {
    "token": {"label": "probe", "pin": "env:SCEPD_PROBE"},
    "ca": {"key": "pkcs11:token=probe;object=ca", "certificate": "ca.pem"},
    "store": {"path": "scepd.sqlite3"},
    "challenge": {"static": "env:SCEPD_PROBE"},
    "intune": {"tenant": "example.onmicrosoft.com", "client_id": "probe", "client_secret": "env:SCEPD_PROBE"},
    "profiles": {"NAME": {}},
    "endpoints": {"NAME": {}},
}


@dataclass(frozen=True)
class Doc:
    """What a key is for. `unset` says what an unset key (default None) means, when "not set" alone would not."""

    text: str
    unset: str = ""


TABLES: dict[str, str] = {
    "server": "The SCEP listener.",
    "token": "The PKCS#11 token that holds every private key (SoftHSM2 in development, an HSM or TPM in production).",
    "ca": "The CA and RA keys and certificates, and what goes into every issued certificate "
    "(the key layout is explained in [keys.md](keys.md)).",
    "store": "Where issued certificates, challenges, held requests and the Intune ledger are kept.",
    "crl": "The CRL the daemon signs, serves and optionally writes to disk.",
    "metrics": "The operator's listener: `/metrics`, `/healthz`, `/readyz` ([operations.md](operations.md)).",
    "scep": "Legacy algorithms SCEP clients may use.",
    "challenge": "The shared secret and one-time challenges of `static` and `onetime` endpoints.",
    "intune": "Microsoft Intune challenge validation. Without this table no endpoint may use "
    '`challenge = "intune"`. Behaviour and failure modes: [intune.md](intune.md); the wire protocol: '
    "[intune-contract.md](intune-contract.md).",
    "profiles": "Certificate profiles, one table per profile (`[profiles.NAME]`). A profile called `default` "
    "always exists; an empty table gives every default below.",
    "endpoints": "SCEP endpoints, one table per URL path (`[endpoints.NAME]`). Without any, one endpoint "
    "called `default` serves `/scep` with the static challenge.",
}

KEYS: dict[str, Doc] = {
    # [server]
    "server.listen": Doc("`HOST:PORT` the SCEP endpoints are served on; port 0 lets the kernel pick a free one."),
    "server.max_message_bytes": Doc(
        "Largest PKIOperation body accepted (16 KiB to 16 MiB); a larger one is answered HTTP 413. "
        "A GET message may be a third longer, as it is base64."
    ),
    "server.legacy_path": Doc("Also answer the first endpoint at `/cgi-bin/pkiclient.exe`, where old clients look."),
    "server.processes": Doc(
        "Serving processes sharing the port (1 to 64). Each has its own socket, token session and store "
        "connection; only the first runs the background loops and talks to systemd. "
        "`scepd init --processes N` writes it."
    ),
    "server.node_name": Doc(
        "This node's name among several sharing one PostgreSQL database: it starts the holder name of the "
        "leader lease (with the process ID and a random suffix) and appears in the `leader_acquired` and "
        "`leader_lost` events ([operations.md](operations.md)). It also names the node's row in the key "
        "check ([nodes.md](nodes.md#the-keys)), so every node needs its own.",
        unset="the machine's hostname",
    ),
    "server.leader_lease_seconds": Doc(
        "How long (1 to 600 s) one node may run the once-per-deployment loops (CRL signing, pending "
        "expiry, Intune revocation sync) without renewing its lease in the store. The leader renews every "
        "third of it; after a crash another node takes over within about 1.3 times this."
    ),
    # [token]
    "token.module": Doc("Path of the PKCS#11 module to load."),
    "token.label": Doc("Label of the token to use."),
    "token.pin": Doc(
        "Where the user PIN comes from: a secret source (`file:`, `env:` or `credential:`). Never logged.",
        unset="required",
    ),
    "token.softhsm2_conf": Doc(
        "SoftHSM2 only: the `softhsm2.conf` to load, passed to the module as `SOFTHSM2_CONF`.",
        unset="the module's own default",
    ),
    "token.tpm2_pkcs11_store": Doc(
        "tpm2-pkcs11 only: the directory of its key store, passed to the module as `TPM2_PKCS11_STORE`. "
        "`scepd init --token tpm` puts it in the state directory ([keys.md](keys.md)).",
        unset="the module's own default",
    ),
    "token.tpm2_tcti": Doc(
        "tpm2-pkcs11 only: how the module reaches the TPM (`TPM2_PKCS11_TCTI`), e.g. `device:/dev/tpmrm0` "
        "(the kernel's resource manager) or `tabrmd:bus_type=session`.",
        unset="the module's own default",
    ),
    "token.timeout": Doc(
        "Seconds one token call may take (0.5 to 600). A token that does not answer in time (a frozen TPM "
        "has no timeout of its own) turns the request into a 503 with Retry-After instead of a hang."
    ),
    "token.workers": Doc(
        "0: every token call runs on one thread inside the daemon. N (up to 64): N worker processes, each "
        "with its own session. `scepd init` writes 2, which was faster under load "
        "([benchmarks.md](benchmarks.md))."
    ),
    # [ca]
    "ca.key": Doc(
        "PKCS#11 URI (RFC 7512) of the CA private key, for example "
        "`pkcs11:token=scepd;object=scepd-ca;type=private`. It must name the token of `[token]`."
    ),
    "ca.certificate": Doc("PEM file of the CA certificate; it must hold the public key of `ca.key`."),
    "ca.ra_key": Doc(
        "PKCS#11 URI of the RA key, which opens envelopes and signs replies. Goes with `ca.ra_certificate`.",
        unset="no RA: the CA key also opens envelopes (start-up warns); `scepd init` writes `scepd-ra`",
    ),
    "ca.ra_certificate": Doc(
        "PEM file of the RA certificate. With an RA, GetCACert answers RA and CA as a certs-only message.",
        unset="no RA",
    ),
    "ca.hash": Doc("Digest for issued certificates and CRLs: `sha256`, `sha384` or `sha512`."),
    "ca.next_certificate": Doc(
        "PEM file with the rollover CA certificate first, then any new RA certificates. GetNextCACert "
        "serves them signed by the current CA key, and GetCACaps then offers `GetNextCACert`.",
        unset="no rollover; GetNextCACert answers 404",
    ),
    "ca.crl_url": Doc(
        "CRL distribution point written into issued certificates (http, https or ldap), usually `crl.path` "
        "as clients reach it.",
        unset="no CRL distribution point",
    ),
    "ca.ocsp_url": Doc(
        "OCSP responder written into issued certificates' authority information access (scepd runs none).",
        unset="none",
    ),
    "ca.issuer_url": Doc(
        "Where the CA certificate can be fetched, written into issued certificates' authority information access.",
        unset="none",
    ),
    "ca.expiry_warning_days": Doc(
        "From this many days (1 to 7300) before the CA or RA certificate ends, the daemon logs "
        "`event=ca_certificate_expiring` / `ra_certificate_expiring` at start-up and every 6 hours, saying "
        "whether a rollover certificate is configured; after the end, `*_certificate_expired`."
    ),
    # [store]
    "store.path": Doc(
        "The SQLite database file (WAL mode; every certificate is durable before its reply leaves). "
        "Set this or `url`, not both.",
        unset="`url` must be set",
    ),
    "store.url": Doc(
        "A PostgreSQL database instead of the SQLite file, as a libpq URL such as "
        "`postgresql://scepd@db.example.net/scepd?sslmode=verify-full`, for several scepd nodes that share one "
        "CA. Its schema is created on first use. The URL must not carry a password: libpq reads it from a "
        "password file (`PGPASSFILE`, `~/.pgpass`), or the connection uses a client certificate (`sslcert=`). "
        "Every session gets `statement_timeout=10s` and a 5 s `connect_timeout` unless the URL sets its own "
        "(`?connect_timeout=3&options=-c%20statement_timeout%3D5s`); a call to the database not done within "
        "the statement timeout plus 2 s has its connection dropped and answers 503, so a hung server cannot "
        "hold requests ([operations-faults.md](operations-faults.md)). "
        "Needs the `postgres` extra (psycopg 3); the backend and what is not done yet: "
        "[storage.md](storage.md), [postgres-status.md](postgres-status.md).",
        unset="the SQLite file at `path`",
    ),
    # [crl]
    "crl.path": Doc("URL path the current CRL is served at (DER, `application/pkix-crl`); must start with `/`."),
    "crl.lifetime_hours": Doc(
        "nextUpdate minus thisUpdate of each CRL (up to 8784). The daemon signs a new one half way through."
    ),
    "crl.check_interval_seconds": Doc(
        "How often (0.1 to 3600 s) the daemon looks for revocations another process made "
        "(`scepd cert revoke`, `scepd intune sync`), and how often serving processes reload the CRL."
    ),
    "crl.file": Doc(
        "Also write each new CRL to this file, atomically: DER, or PEM when the name ends in `.pem`.",
        unset="no file (`scepd init` writes `ca.crl`)",
    ),
    # [metrics]
    "metrics.listen": Doc("`HOST:PORT` of the metrics and health listener; keep it off the devices' network."),
    "metrics.enabled": Doc("false: no second listener; `/healthz` and `/readyz` stay on the SCEP listener."),
    # [scep]
    "scep.allow_sha1": Doc("Accept SHA-1 message digests, and list SHA-1 in GetCACaps."),
    "scep.allow_single_des": Doc(
        "Accept single-DES envelopes from legacy clients (the reply then uses DES too); otherwise they get badAlg."
    ),
    # [challenge]
    "challenge.static": Doc(
        'Secret source of the shared challenge password. Required by any endpoint with `challenge = "static"`.',
        unset="no static challenge",
    ),
    "challenge.onetime_ttl_minutes": Doc("Lifetime (1 to 43200 minutes) of challenges made by `scepd challenge mint`."),
    # [intune]
    "intune.tenant": Doc("Entra tenant: a domain such as `contoso.onmicrosoft.com`, or its GUID."),
    "intune.client_id": Doc("Application (client) ID of the app registration."),
    "intune.client_secret": Doc(
        "Secret source of the app's client secret. Give either this or `client_certificate` + `client_key`.",
        unset="use the client certificate",
    ),
    "intune.client_certificate": Doc(
        "PEM certificate of the app, uploaded to the app registration (`scepd intune credential` makes one).",
        unset="use the client secret",
    ),
    "intune.client_key": Doc(
        "PKCS#11 URI of the app's key: token requests carry an assertion signed on the token.",
        unset="use the client secret",
    ),
    "intune.assertion_algorithm": Doc(
        "`PS256` (header `x5t#S256`) or `RS256` (header `x5t`) for client assertions. A key backend that "
        "cannot sign RSA-PSS falls back to RS256 with one warning."
    ),
    "intune.authority": Doc("Entra authority; tokens come from `{authority}{tenant}/oauth2/v2.0/token`."),
    "intune.graph_url": Doc("Microsoft Graph, asked which Intune service URLs the tenant uses."),
    "intune.intune_resource_url": Doc("The Intune API resource; its token scope is this URL followed by `/.default`."),
    "intune.intune_app_id": Doc("App ID of the Intune service principal whose endpoints Graph lists."),
    "intune.provider_name": Doc("Names scepd to Intune: sent as `callerInfo` and in the `UserAgent` header."),
    "intune.timeout_seconds": Doc("Bound on each HTTP exchange with Entra, Graph or Intune (up to 120 s)."),
    "intune.retries": Doc(
        "Further attempts (0 to 5) after a transport error, 429 or 5xx: backoff from 0.5 s doubling, "
        "or the server's Retry-After up to 10 s."
    ),
    "intune.notification_budget_seconds": Doc(
        "Time (1 to 600 s) all successNotification attempts together may take; past it the certificate is "
        "revoked and not delivered ([intune.md](intune.md))."
    ),
    "intune.proxy": Doc(
        "`http(s)://host:port` of an outbound proxy for every Entra, Graph and Intune call, instead of the "
        "environment's proxy variables. No credentials in the URL.",
        unset="the environment's `HTTPS_PROXY` / `NO_PROXY`",
    ),
    "intune.proxy_credentials": Doc(
        "Secret source holding `user:password` for the proxy (Basic). Needs `intune.proxy`.",
        unset="no proxy authentication",
    ),
    "intune.ca_bundle": Doc(
        "PEM roots to trust for these calls instead of the system's, for a TLS-inspecting proxy.",
        unset="the system's roots",
    ),
    "intune.revocation_interval_seconds": Doc("How often (0.1 to 86400 s) revocation requests are pulled from Intune."),
    "intune.revocation_batch": Doc("`maxRequests` of each download (1 to 500)."),
    "intune.revocation_issuer_name": Doc(
        "The `issuingCertificateAuthority` sent in success notifications, and so the name revocation "
        "downloads filter on. Every name sent before is polled as well.",
        unset="the CA certificate's subject (RFC 4514)",
    ),
    # [profiles.NAME]
    "profiles.NAME.validity_days": Doc("Certificate lifetime (1 to 3650 days), never past the CA's own end."),
    "profiles.NAME.key_usage": Doc(
        "Key usages of issued certificates; `key_encipherment` is left out for EC keys. Whatever a CSR asks "
        "for (key usage, EKU, basic constraints) is ignored."
    ),
    "profiles.NAME.extended_key_usage": Doc("Extended key usage OIDs (the default is client authentication)."),
    "profiles.NAME.min_rsa_bits": Doc("Smallest RSA client key accepted (at least 2048); smaller gets badAlg."),
    "profiles.NAME.min_ec_bits": Doc("Smallest EC client key accepted: 256, 384 or 521; smaller gets badAlg."),
    "profiles.NAME.type": Doc("`device` or `user`; recorded in the `issued` audit event."),
    "profiles.NAME.on_disallowed": Doc(
        "A CSR naming a subject attribute or SAN the profile does not accept: `refuse` (FAILURE badRequest, "
        "the failInfoText names it) or `trim` (issue without it)."
    ),
    "profiles.NAME.subject_accept": Doc(
        "Subject attributes a CSR may carry, from `CN`, `E`, `O`, `OU`, `C`, `ST`, `L`, `STREET`, `DC`, "
        "`UID`, `SERIALNUMBER`, `GN`, `SN`, `T`.",
        unset="any of them",
    ),
    "profiles.NAME.subject_suffix": Doc(
        'RFC 4514 attributes (`"O=Example,C=DE"`) placed as the most significant part of every subject, '
        "replacing CSR attributes of the same types."
    ),
    "profiles.NAME.pending_ttl_hours": Doc(
        "With `approval`: a held request nobody decided on expires after this (up to 2160 hours); "
        "its next poll gets FAILURE."
    ),
    "profiles.NAME.key_types": Doc("Client key types accepted (`rsa`, `ec`); others get badAlg."),
    "profiles.NAME.csr_hashes": Doc("Hashes a CSR may be signed with; others get badAlg."),
    "profiles.NAME.copy_san": Doc(
        "Copy the CSR's subjectAltName (as far as `san_accept` allows) into the certificate."
    ),
    "profiles.NAME.san_accept": Doc(
        "subjectAltName forms a CSR may carry: `dns`, `email` (rfc822Name), `upn` (Microsoft UPN otherName), "
        "`uri`, `ip`. Other forms are never accepted."
    ),
    "profiles.NAME.san_uri_prefixes": Doc(
        "When not empty, a URI SAN must start with one of these, e.g. `tag:microsoft.com,2022-09-14:sid:` "
        "for Intune's strong-mapping SID."
    ),
    "profiles.NAME.san_dns_suffixes": Doc(
        "When not empty, a DNS SAN must be one of these domains or a name below one."
    ),
    "profiles.NAME.revoke_superseded": Doc("A renewal revokes the certificate it renews (reason `superseded`)."),
    "profiles.NAME.approval": Doc(
        "Hold every request for an operator (`scepd pending approve`/`reject`); the client gets PENDING and "
        "polls. Not allowed on `intune` endpoints."
    ),
    # [endpoints.NAME]
    "endpoints.NAME.path": Doc("URL path of this endpoint; must start with `/` and differ from every other path."),
    "endpoints.NAME.challenge": Doc(
        "How requests are authorised: `static`, `onetime`, `intune` (needs `[intune]`) or `none`."
    ),
    "endpoints.NAME.profile": Doc("Name of the profile certificates issued here follow."),
    "endpoints.NAME.renewal": Doc(
        "Accept, without a challenge, a request signed by a valid, unrevoked certificate this CA issued. "
        'The default is false on `challenge = "intune"` endpoints, since Intune renews with a fresh challenge.'
    ),
}

_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array of strings"}


def _type(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return "number" if set(kind) == {int, float} else " or ".join(_TYPES[k] for k in kind)
    return _TYPES[kind]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _default(read: KeyRead, doc: Doc) -> str:
    if read.default is ...:
        return "required"
    if read.default is None:
        return doc.unset or "not set"
    return f"`{_toml(read.default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _keys() -> list[KeyRead]:
    """The keys the loader reads for `PROBE`, tables themselves left out."""
    return [r for r in keys_read(PROBE, Path("/etc/scepd/scepd.toml")) if r.kind is not dict]


def render() -> str:
    """The whole page; raises ValueError when the prose and the loader disagree on the set of keys."""
    reads = _keys()
    read_keys = [r.key for r in reads]
    undocumented = [k for k in read_keys if k not in KEYS]
    unread = [k for k in KEYS if k not in read_keys]
    if undocumented or unread:
        raise ValueError(f"keys without prose: {undocumented}; prose for keys the loader does not read: {unread}")
    by_key = {r.key: r for r in reads}
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m scepd.config_reference` from the loader in scepd/config.py. Do not edit. -->",
        "",
        "scepd reads one TOML file (`scepd serve --config FILE`; `scepd init` writes one). "
        "`scepd config check --config FILE` validates it: an error names the key and the reason, and an unknown "
        "key is an error too. Relative paths are resolved against the directory of the file.",
        "",
        "Secrets never appear in the file. A key that takes a secret takes a *source* instead: "
        "`file:PATH` (the file's contents), `env:NAME` (an environment variable) or `credential:NAME` "
        "(a systemd credential, `$CREDENTIALS_DIRECTORY/NAME`). A value that is not a source is refused.",
        "",
        "Tables marked NAME (`[profiles.NAME]`, `[endpoints.NAME]`) may appear any number of times.",
        "",
    ]
    for table, intro in TABLES.items():
        keys = [k for k in KEYS if k.split(".", 1)[0] == table]
        heading = f"[{table}.NAME]" if table in ("profiles", "endpoints") else f"[{table}]"
        lines += [f"## {heading}", "", intro, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key in keys:
            read, doc = by_key[key], KEYS[key]
            lines.append(f"| `{key}` | {_type(read.kind)} | {_cell(_default(read, doc))} | {_cell(doc.text)} |")
        lines.append("")
    stray = [k for k in KEYS if k.split(".", 1)[0] not in TABLES]
    if stray:
        raise ValueError(f"keys in no documented table: {stray}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scepd.config_reference", description="Write or check docs/configuration.md."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from what would be written")
    parser.add_argument("--out", type=Path, default=PAGE, help=f"where to write (default {PAGE})")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m scepd.config_reference", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
