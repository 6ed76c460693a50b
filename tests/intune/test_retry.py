"""The outbound retry policy (scepd.intune.retry): what is retried, how often, how long apart."""

from __future__ import annotations

from scepd.intune.retry import RetryPolicy
from scepd.intune.settings import IntuneSettings


def test_retryable_statuses() -> None:
    assert [s for s in (200, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504) if RetryPolicy.retryable(s)] == [
        429,
        500,
        502,
        503,
        504,
    ]


def test_attempts_and_backoff() -> None:
    policy = RetryPolicy(retries=2, backoff=0.5, max_retry_after=10)
    assert [policy.exhausted(a) for a in range(4)] == [False, False, True, True]
    assert [policy.pause(r) for r in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_retry_after_is_honoured_within_the_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_retry_after=10)
    assert policy.pause(1, "3") == 3.0
    assert policy.pause(1, "120") == 10.0
    assert policy.pause(1, "-5") == 0.0
    assert policy.pause(2, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.0  # a date: the backoff
    assert policy.pause(2, "") == 1.0


def test_the_settings_carry_one_policy() -> None:
    settings = IntuneSettings(tenant="t", client_id="c", retries=4, backoff=0.25, max_retry_after=3)
    assert settings.retry == RetryPolicy(retries=4, backoff=0.25, max_retry_after=3)
