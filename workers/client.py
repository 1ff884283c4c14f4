"""HTTP client of the worker API (docs/worker-api.md).

Every call has a timeout and goes through the shared retry policy (`locus_client.retry`): connection errors,
timeouts and 5xx are retried with exponential backoff and full jitter, and a throttled 429 after its
`Retry-After`, because a portal restart or a burst of throttling must not throw away a ten-hour training
run's result. Any other 4xx is never retried: it is an answer, not an outage. A 409 means "this attempt (or
claim) is over" and is raised as its own exception so callers can stop work without treating it as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from locus_client.retry import TRANSIENT_ERRORS, RetryPolicy
from workers import __version__

API_PREFIX = "/api/v1/worker/"


class PortalError(Exception):
    """The portal answered with an error (or could not be reached); carries its structured error body."""

    def __init__(self, message: str, status: int | None = None, code: str = "", fields: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = fields or {}


class Conflict(PortalError):
    """409: the job is not claimable, or the attempt is over (lease lost, cancelled, stale fencing token)."""


AttemptOver = Conflict  # the name the runner uses: a 409 on an attempt call ends the attempt


class NotFound(PortalError):
    """404: unknown job or attempt (or not ours: the portal does not leak existence)."""


class PortalUnavailable(PortalError):
    """Connection errors, 5xx or throttling (429) persisted through every retry: try again later, the job's
    message is kept."""


def _error_from(response: requests.Response) -> PortalError:
    """Build the exception for a non-2xx answer, surfacing `{"error": {...}}` when present."""
    code, message, fields = "", response.reason or "", {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code", ""))
        message = str(err.get("message", message))
        fields = err.get("fields") or {}
    text = f"{response.request.method} {response.url} → {response.status_code}"
    text += f" {code}: {message}" if code else f": {message}"
    cls = {409: Conflict, 404: NotFound}.get(response.status_code)
    if cls is None:
        # Still throttled after every retry is an outage of our share, not a refusal of the job.
        cls = PortalUnavailable if response.status_code >= 500 or response.status_code == 429 else PortalError
    return cls(text, status=response.status_code, code=code, fields=fields)


# The name callers pass as `backoff=` (tests, deployments): Backoff(retries=6, base_s=0.5, cap_s=30).
Backoff = RetryPolicy


class WorkerClient:
    """One worker's session with the portal. Thread-safe enough for the runner's heartbeat/log threads:
    requests.Session is shared, but each call is an independent request."""

    def __init__(
        self,
        portal: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        backoff: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ):
        self.portal = portal.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.backoff = backoff or RetryPolicy()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"locus-worker/{__version__}"
        self.token = token

    # -- plumbing -----------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return urljoin(self.portal, API_PREFIX.lstrip("/") + path)

    def absolute(self, url: str) -> str:
        """Signed file URLs may be portal-relative (local storage); resolve them against the portal."""
        return urljoin(self.portal, url)

    def _headers(self, fencing_token: str | None, auth: bool) -> dict[str, str]:
        headers = {}
        if auth:
            if not self.token:
                raise PortalError("this worker is not enrolled (no token)")
            headers["Authorization"] = f"Worker {self.token}"
        if fencing_token is not None:
            headers["X-Fencing-Token"] = fencing_token
        return headers

    def post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        fencing_token: str | None = None,
        auth: bool = True,
        timeout_s: float | None = None,
    ) -> requests.Response:
        """POST JSON with retries; returns the 2xx response or raises the matching PortalError."""
        url = self.url(path)
        headers = self._headers(fencing_token, auth)
        return self._call(
            f"POST {path}",
            lambda: self.session.post(url, json=body, headers=headers, timeout=timeout_s or self.timeout_s),
        )

    def _call(self, what: str, fn: Callable[[], requests.Response]) -> requests.Response:
        """One call under the retry policy; the 2xx/3xx answer, or the matching PortalError."""
        try:
            response = self.backoff.call(fn, what)
        except TRANSIENT_ERRORS as exc:  # the policy's retries ran out on a transport error
            raise PortalUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    # -- worker calls -------------------------------------------------------------------------------------
    def enroll(self, enrollment_token: str, name: str, capabilities: dict[str, Any]) -> dict[str, Any]:
        body = {"enrollment_token": enrollment_token, "name": name, "capabilities": capabilities}
        return self.post("enroll", body, auth=False).json()

    def heartbeat(self, capabilities: dict[str, Any]) -> dict[str, Any]:
        return self.post("heartbeat", {"capabilities": capabilities}).json()

    def claim(self, job_id: str) -> dict[str, Any]:
        return self.post(f"jobs/{job_id}/claim", {}).json()

    def claim_next(self, wait_s: float = 20) -> dict[str, Any] | None:
        """Long-poll for any job this worker's registered capabilities cover; None when nothing came."""
        response = self.post("claim-next", {"wait_s": wait_s}, timeout_s=wait_s + self.timeout_s)
        return None if response.status_code == 204 else response.json()

    # -- attempt calls (fenced) ---------------------------------------------------------------------------
    def attempt_heartbeat(
        self, attempt_id: str, fencing_token: str, progress: dict[str, Any] | None
    ) -> dict[str, Any]:
        return self.post(
            f"attempts/{attempt_id}/heartbeat", {"progress": progress}, fencing_token=fencing_token
        ).json()

    def append_log(self, attempt_id: str, fencing_token: str, text: str) -> dict[str, Any]:
        return self.post(f"attempts/{attempt_id}/log", {"text": text}, fencing_token=fencing_token).json()

    def output_target(
        self, attempt_id: str, fencing_token: str, name: str, size: int, sha256: str
    ) -> dict[str, Any]:
        return self.post(
            f"attempts/{attempt_id}/outputs",
            {"name": name, "size": size, "sha256": sha256},
            fencing_token=fencing_token,
        ).json()

    def complete(self, attempt_id: str, fencing_token: str, result: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"attempts/{attempt_id}/complete", result, fencing_token=fencing_token).json()

    # -- file transfer (signed URLs: never send our token there) ------------------------------------------
    def download(self, url: str, dest: Path, chunk: int = 1 << 20) -> tuple[int, str]:
        """Stream `url` into `dest`; returns (size, sha256 hex). A broken stream is retried from zero."""
        import hashlib

        target = self.absolute(url)
        result: dict[str, Any] = {}

        def fetch() -> requests.Response:
            response = self.session.get(target, stream=True, timeout=self.timeout_s)
            if response.status_code >= 400:
                return response
            digest, size = hashlib.sha256(), 0
            with response, open(dest, "wb") as fh:
                for block in response.iter_content(chunk):
                    fh.write(block)
                    digest.update(block)
                    size += len(block)
            result.update(size=size, sha256=digest.hexdigest())
            return response

        self._call(f"GET {dest.name}", fetch)
        return result["size"], result["sha256"]

    def upload(self, target: dict[str, Any], path: Path) -> None:
        """Send the file's bytes to an upload target `{url, method, headers}`, streaming from disk."""
        url = self.absolute(target["url"])
        method = (target.get("method") or "PUT").upper()
        headers = {str(k): str(v) for k, v in (target.get("headers") or {}).items()}

        def send() -> requests.Response:
            if path.stat().st_size == 0:  # an empty stream would go out chunked, which S3 refuses
                return self.session.request(method, url, data=b"", headers=headers, timeout=self.timeout_s)
            with open(path, "rb") as fh:  # reopened per retry so each try sends every byte
                return self.session.request(method, url, data=fh, headers=headers, timeout=self.timeout_s)

        self._call(f"{method} {path.name}", send)
