"""The one retry policy for scepd's outbound HTTP (Entra tokens, Graph discovery, Intune calls).

A transport error, a 429 or a 5xx is worth another attempt; anything else is
final. Retries are bounded (`retries` after the first attempt), and the pause
before each doubles from `backoff`, unless the server said how long to wait
(Retry-After, in seconds), which is honoured up to `max_retry_after`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2  # further attempts after the first
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_retry_after: float = 10.0  # a longer Retry-After is cut to this

    @staticmethod
    def retryable(status: int) -> bool:
        """Whether an HTTP status may succeed if asked again (throttled, or the server's fault)."""
        return status == 429 or status >= 500

    def exhausted(self, attempt: int) -> bool:
        """Whether `attempt` (0 for the first) was the last one allowed."""
        return attempt >= self.retries

    def pause(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first); `retry_after` is the header as sent."""
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_retry_after)
            except ValueError:
                pass  # an HTTP date, or garbage: fall back to the backoff
        return float(self.backoff * 2 ** (retry - 1))
