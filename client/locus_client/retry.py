"""The one HTTP retry policy of Locus's clients: the worker agent (`workers.client`) and the user's Python
client (`locus_client.api`) both send their calls through `RetryPolicy.call`.

Why one policy: a call that fails on an outage must be tried again, or a finished ten-hour result is thrown
away and the job runs again; a call the portal refused must not be, because asking again gets the same answer.
So, for each try:

- a dropped connection, a timeout or a broken stream, and any 5xx: an outage, retried after exponential
  backoff with full jitter (so a restarted portal is not hit by every client at the same instant);
- 429 with `Retry-After` (seconds or an HTTP date): throttled, retried after the time the server asked for,
  capped so that a wrong header cannot park a worker for hours;
- 429 without `Retry-After`: a proxy's rate limit, retried after backoff — except the portal's own
  `quota_exceeded` refusal (too many active jobs), which waiting a few seconds does not lift;
- any other answer, every other 4xx included: final, never retried.

Free of Django (stdlib and requests only): it runs on GPU boxes and laptops without the portal installed.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

log = logging.getLogger("locus.http")

# Failures of the transport, not answers: the request may not have reached the portal, or its answer was lost.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# 429 codes of the portal that are a standing refusal rather than a throttle (jobs/api/errors.py).
STANDING_REFUSALS = frozenset({"quota_exceeded"})


def retry_after_s(response: requests.Response, now: datetime | None = None) -> float | None:
    """The wait an answer asks for in its `Retry-After` header, in seconds (≥ 0); None if absent or garbled.

    RFC 9110 allows delay-seconds or an HTTP date; a date in the past means "now"."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; some servers omit the zone
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return max(0.0, seconds)
    return seconds if seconds >= 0 and seconds == seconds else None  # negative or NaN: not a wait


def _error_code(response: requests.Response) -> str:
    """The portal's `{"error": {"code": ...}}`, or "" for any other body (a proxy's HTML page, say)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code", "")) if isinstance(error, dict) else ""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one HTTP call.

    `retries` is the number of tries after the first (0: try once). Backoff before retry n (0-based) is
    uniform(0, min(cap_s, base_s·2ⁿ)); a server's `Retry-After` is honoured up to `max_retry_after_s`.
    `sleep` is injectable so tests can record waits instead of taking them; `log_level` lets the user client
    keep its command line quiet (the worker logs each retry as a warning)."""

    retries: int = 6
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_after_s: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    log_level: int = logging.WARNING

    def backoff(self, retry: int) -> float:
        """Full-jitter exponential backoff before retry `retry` (0-based), in seconds."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2**retry))

    def delay(self, outcome: requests.Response | BaseException, retry: int) -> float | None:
        """Seconds to wait before retrying after `outcome` (a response or the exception a try raised), or None
        when it must not be retried. Does not count tries: `call` does."""
        if isinstance(outcome, BaseException):
            return self.backoff(retry) if isinstance(outcome, TRANSIENT_ERRORS) else None
        if outcome.status_code >= 500:
            return self.backoff(retry)
        if outcome.status_code == 429:
            asked = retry_after_s(outcome)
            if asked is not None:
                return min(asked, self.max_retry_after_s)
            return None if _error_code(outcome) in STANDING_REFUSALS else self.backoff(retry)
        return None

    def call(
        self, fn: Callable[[], requests.Response], what: str = "request", *, retries: int | None = None
    ) -> requests.Response:
        """Run `fn` (one try of the call) until its outcome is final or the tries run out.

        Answers the last response, whatever its status: the caller turns a 4xx/5xx into its own error. When
        the last try raised a transient error, that exception is raised. `retries` overrides the policy's for
        one call (0 for a call that is not safe to repeat)."""
        limit = self.retries if retries is None else retries
        for retry in range(limit + 1):
            try:
                outcome: requests.Response | BaseException = fn()
            except TRANSIENT_ERRORS as exc:
                outcome = exc
            wait = self.delay(outcome, retry)
            if wait is None or retry == limit:
                if isinstance(outcome, BaseException):
                    raise outcome
                return outcome
            reason = (
                f"{type(outcome).__name__}: {outcome}"
                if isinstance(outcome, BaseException)
                else f"HTTP {outcome.status_code}"
            )
            log.log(
                self.log_level, "%s failed (%s); retry %d/%d in %.1f s", what, reason, retry + 1, limit, wait
            )
            if isinstance(outcome, requests.Response):
                outcome.close()  # a streamed answer would otherwise hold its connection while we sleep
            self.sleep(wait)
        raise AssertionError("unreachable")  # the last try returns or raises
