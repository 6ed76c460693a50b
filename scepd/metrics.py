"""Prometheus metrics, one registry per process so tests can build several daemons.

Names follow Prometheus conventions: `scepd_` prefix, base units, `_total` for
counters. Modules record into the module-level objects below; `exposition()`
is what the metrics listener serves: `REGISTRY`, or, when `server.processes`
runs several serving processes (`PROMETHEUS_MULTIPROC_DIR` set before this
module is imported), the sum over all of them from prometheus-client's
multiprocess files. Each gauge says how its per-process values combine:
token gauges add up; the store, CA, CRL and readiness gauges are set only by
the primary process, when scraped, and the most recent value is served.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REGISTRY = CollectorRegistry(auto_describe=True)

# Private-key operations: the signing metric this appliance exists to expose.
KEY_OPERATION_SECONDS = Histogram(
    "scepd_key_operation_seconds",
    "Latency of private-key operations on the key backend, by key label, operation, mechanism and result.",
    ["key", "operation", "mechanism", "result"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)

UNREADABLE_REQUESTS = Counter(
    "scepd_unreadable_requests_total",
    "Requests answered FAILURE badMessageCheck because the envelope or its payload could not be read, by the"
    " stage that failed (key transport, content padding, payload). The client always gets the same answer;"
    " only this metric and the log tell the stages apart.",
    ["stage"],
    registry=REGISTRY,
)

TOKEN_WORKERS = Gauge(
    "scepd_token_workers",
    "Token workers (each owns one PKCS#11 session) in the pool.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
TOKEN_WORKERS_BUSY = Gauge(
    "scepd_token_workers_busy",
    "Token workers currently running an operation.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

ENROLLMENTS = Counter(
    "scepd_enrollments_total",
    "SCEP operations answered, by operation, profile, challenge mode and outcome (status or failInfo).",
    ["operation", "profile", "challenge", "outcome"],
    registry=REGISTRY,
)
ENROLLMENT_SECONDS = Histogram(
    "scepd_enrollment_seconds",
    "Time from a parsed PKIOperation to its signed reply.",
    ["operation"],
    registry=REGISTRY,
)
CERTIFICATES_ISSUED = Counter(
    "scepd_certificates_issued_total",
    "Certificates issued and stored.",
    ["profile"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "scepd_http_requests_total",
    "HTTP requests answered, by route and status code.",
    ["route", "status"],
    registry=REGISTRY,
)
CA_CERT_EXPIRY_SECONDS = Gauge(
    "scepd_ca_certificate_expiry_seconds",
    "Seconds until the CA certificate's notAfter.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

INTUNE_CALLS = Counter(
    "scepd_intune_calls_total",
    "Intune and Entra calls by action (token, discovery, validate, success_notification, ...) and result"
    " (ok, http_NNN, transport, timeout, bad_response, service_not_found).",
    ["action", "result"],
    registry=REGISTRY,
)
INTUNE_CALL_SECONDS = Histogram(
    "scepd_intune_call_seconds",
    "Latency of one logical Intune call, retries included.",
    ["action"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
INTUNE_VERDICTS = Counter(
    "scepd_intune_verdicts_total",
    "Codes Intune answered to validateRequest and the notifications (Success, ChallengeExpired, ...).",
    ["action", "code"],
    registry=REGISTRY,
)
INTUNE_REVOCATIONS = Counter(
    "scepd_intune_revocation_requests_total",
    "Revocation requests pulled from Intune, by outcome (revoked, not_found, already_revoked, foreign_issuer).",
    ["outcome"],
    registry=REGISTRY,
)
INTUNE_REVOCATION_SYNC_ERRORS = Counter(
    "scepd_intune_revocation_sync_errors_total",
    "Intune revocation sync rounds that failed, by kind (an Intune error code, store, token, ...).",
    ["kind"],
    registry=REGISTRY,
)
INTUNE_REVOCATION_SYNC_ENABLED = Gauge(
    "scepd_intune_revocation_sync_enabled",
    "1 while Intune revocation sync runs; 0 while discovery lists no PkiConnectorFEService for the tenant.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

# Store-derived gauges: refreshed from the store when scraped (`refresh_store_gauges`).
CERTIFICATES = Gauge(
    "scepd_certificates",
    "Certificates in the store by status (valid, revoked, superseded; valid includes expired ones).",
    ["status"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
REQUESTS_PENDING = Gauge(
    "scepd_requests_pending",
    "Certificate requests held for manual approval.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
CRL_NEXT_UPDATE_SECONDS = Gauge(
    "scepd_crl_next_update_seconds",
    "Seconds until the current CRL's nextUpdate (negative once it has passed).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
LEADER = Gauge(
    "scepd_leader",
    "1 while this node holds the leader lease and runs the once-per-deployment loops (CRL signing, pending"
    " expiry, Intune revocation sync), else 0.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
NODE_KEYS_DIFFER = Gauge(
    "scepd_node_keys_differ",
    "Other live nodes on the shared PostgreSQL store whose CA key, RA key or rejection secret differs from this"
    " node's (scepd/nodekeys.py); 0 when all agree, and always 0 on SQLite.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
READY = Gauge(
    "scepd_ready",
    "1 when a readiness check passed at its last run, 0 when it failed, by check (token, store, intune).",
    ["check"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

STORE_ERRORS = Counter(
    "scepd_store_errors_total",
    "Store operations that failed, by kind (full, readonly, io, locked, corrupt, cantopen, closed, constraint,"
    " other). A fault episode is logged once (event=store_fault); this counts every failure in it.",
    ["kind"],
    registry=REGISTRY,
)

BACKGROUND_FAILURES = Counter(
    "scepd_background_failures_total",
    "Failed iterations of background loops (pending_expiry, metrics_refresh, ...), by loop and kind"
    " (store:<kind> or the exception type). Each fault episode is logged once (event=background_fault).",
    ["loop", "kind"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The text the metrics listener serves: this process, or all serving processes."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


# Beside the CA's: the RA certificate ends years before the CA's and is renewed by
# `scepd ca ra-renew` (docs/keys.md). NaN when there is no RA (lone-CA layout), so no alert fires.
RA_CERT_EXPIRY_SECONDS = Gauge(
    "scepd_ra_certificate_expiry_seconds",
    "Seconds until the RA certificate's notAfter (NaN without an RA).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

# The CRL publisher (primary process): how long the last CRL took and how often regenerating failed.
CRL_BUILD_SECONDS = Gauge(
    "scepd_crl_build_seconds",
    "Seconds the last CRL took: reading the revoked entries, encoding, signing on the token.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
CRL_ENTRIES = Gauge(
    "scepd_crl_entries",
    "Revoked certificates listed on the current CRL (revoked ones expired for over a CRL lifetime are left out).",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
CRL_REFRESH_FAILURES = Counter(
    "scepd_crl_refresh_failures_total",
    "Failed CRL regenerations by cause (token, store, other); the previous CRL is served meanwhile.",
    ["cause"],
    registry=REGISTRY,
)
