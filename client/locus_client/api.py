"""The user API from Python: upload, submit jobs and pipelines, follow, download, the model registry.

It needs only `requests` (and `locus_client.retry`, the policy it shares with the worker agent), so a laptop
or a notebook can drive the portal without the rest of Locus installed. Every call that can be repeated safely is retried on a dropped connection, a 5xx or a throttled 429
(after `Retry-After`), never on any other 4xx: uploads go in resumable chunks and continue where the server
stopped, and a submission carries an Idempotency-Key, so a retry never makes a second job. Downloads are
written to a temporary name, checked against the server's sha256 and only then renamed into place.

    from locus_client import Locus
    locus = Locus("https://locus.example.org", token="...")   # or LOCUS_URL / LOCUS_TOKEN
    dataset = locus.create_dataset("run 42")
    movie = locus.upload(dataset["id"], "movie.tif")
    job = locus.submit("diagnostics", "checksum", inputs={"files": [movie["id"]]})
    job = locus.wait(job["id"], on_log=lambda text: print(text, end=""))
    locus.download_outputs(job["id"], "results/")
    # or all of it in one call: locus.run("diagnostics", "checksum", inputs={"files": ["movie.tif"]}, out="results/")
    locus.run_pipeline("localize", inputs={"frames": ["movie.tif"]}, out="results/")

Command line: `locus --help` (`locus_client.cli`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from locus_client.retry import TRANSIENT_ERRORS, RetryPolicy

TERMINAL = ("succeeded", "failed", "cancelled")
HASH_CHUNK = 1024 * 1024
PIPELINE = "pipeline"  # the application under which the registry's pipelines are submitted


class LocusError(Exception):
    """The portal said no (4xx, with its code, message and per-field reasons), or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error",
                 fields: dict[str, str] | None = None, body: dict | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.fields, self.body = message, status, code, fields or {}, body or {}


class Locus:
    """One portal, one API token. `retries` bounds the tries of each retryable call (`locus_client.retry`: jittered
    backoff up to 1, 2, 4… 60 s, or the throttle's `Retry-After`)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60,
                 retries: int = 6, session: requests.Session | None = None):
        url = url or os.environ.get("LOCUS_URL")
        token = token or os.environ.get("LOCUS_TOKEN")
        if not url:
            raise LocusError("no portal URL: pass url= or set LOCUS_URL")
        if not token:
            raise LocusError("no API token: pass token= or set LOCUS_TOKEN (create one under Account → API tokens)")
        self.base = url.rstrip("/") + "/api/v1"
        self.timeout, self.retries = timeout, max(1, retries)
        # Quiet (DEBUG) retries: the command line prints one line per outcome, not per try.
        self.policy = RetryPolicy(retries=self.retries - 1, base_s=1.0, cap_s=60.0, log_level=logging.DEBUG)
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers.setdefault("User-Agent", "locus-client/1")

    # --- transport ---------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, retry: bool = True, expect_json: bool = True, **kwargs) -> Any:
        """One API call; `path` is below /api/v1 (or a full URL). Raises LocusError on any refusal."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base}/{path.lstrip('/')}"
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.policy.call(lambda: self.session.request(method, url, **kwargs),
                                        f"{method} {url}", retries=None if retry else 0)
        except TRANSIENT_ERRORS as exc:
            raise LocusError(f"cannot reach {url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise _error(response)
        if not expect_json:
            return response
        return response.json() if response.content else None

    # --- registry, datasets, files -----------------------------------------------------------------------

    def applications(self) -> list[dict]:
        return self.request("GET", "applications/")

    def datasets(self) -> list[dict]:
        return self.request("GET", "datasets/")

    def create_dataset(self, name: str, description: str = "") -> dict:
        # Not retried: a lost answer would make a second dataset. Nothing is lost if it fails; call again.
        return self.request("POST", "datasets/", json={"name": name, "description": description}, retry=False)

    def upload(self, dataset_id: str, path: str | os.PathLike, *, name: str | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict:
        """Upload one file in resumable chunks; answers the File. The file is read once: each chunk is hashed
        as it is sent and the sha256 goes with `complete`, where the server checks every byte against it.
        Starting again (same dataset, name and size) finds the unfinished upload and sends only what the
        server lacks; the bytes it already has are hashed from the local file, not sent again."""
        path = Path(path)
        if not path.is_file():
            raise LocusError(f"{path}: no such file")
        size = path.stat().st_size
        upload = self.request("POST", f"datasets/{dataset_id}/uploads/", json={"name": name or path.name,
                                                                              "size": size})
        received, step = upload["received"], max(1, int(upload["chunk_bytes"]))
        digest, hashed = hashlib.sha256(), 0
        with path.open("rb") as fh:
            while hashed < received:  # resuming: the server has these bytes
                block = fh.read(min(HASH_CHUNK, received - hashed))
                if not block:
                    raise LocusError(f"{path}: shorter than the {received} bytes already uploaded")
                digest.update(block)
                hashed += len(block)
            while received < size:
                chunk = fh.read(min(step, size - received))
                if len(chunk) != min(step, size - received):
                    raise LocusError(f"{path} changed while it was being uploaded: start again")
                digest.update(chunk)
                try:
                    upload = self.request("PUT", f"uploads/{upload['id']}/chunk/", params={"offset": received},
                                          data=chunk, headers={"Content-Type": "application/octet-stream"})
                except LocusError as exc:
                    at = str(exc.body.get("error", {}).get("status", ""))
                    if exc.status != 409 or not at.isdigit() or int(at) != received + len(chunk):
                        raise
                    upload["received"] = int(at)  # a retried chunk had landed: go on
                if upload["received"] != received + len(chunk):
                    raise LocusError(f"{path}: the portal holds {upload['received']} bytes, expected "
                                     f"{received + len(chunk)}: start the upload again")
                received = upload["received"]
                if progress:
                    progress(received, size)
        if progress and size == 0:
            progress(0, 0)
        return self.request("POST", f"uploads/{upload['id']}/complete/", json={"sha256": digest.hexdigest()})

    def upload_inputs(self, inputs: dict[str, list[str | os.PathLike]], dataset_name: str,
                      progress: Callable[[Path, int, int], None] | None = None) -> dict[str, list[str]]:
        """A job's inputs with local files uploaded: every path that exists goes into one new dataset (made
        only once all of them are checked); a file id is passed on; any other word is the name of a trained
        model (`models()`), which stands for its file."""
        out: dict[str, list[str]] = {}
        local: list[tuple[str, Path]] = []
        for slot, values in inputs.items():
            for value in values:
                path = Path(value)
                if path.exists():
                    if not path.is_file():
                        raise LocusError(f"input {slot}={value}: not a file")
                    local.append((slot, path))
                elif isinstance(value, Path) or "/" in str(value) or "." in path.name:
                    raise LocusError(f"input {slot}={value}: no such file (a file id has no slash or dot)")
                elif _is_uuid(str(value)):
                    out.setdefault(slot, []).append(str(value))
                else:
                    out.setdefault(slot, []).append(self.model_file(str(value), slot))
        if local:
            dataset = self.create_dataset(dataset_name)
            for slot, path in local:
                file = self.upload(dataset["id"], path, progress=(
                    None if progress is None else lambda done, total, p=path: progress(p, done, total)))
                out.setdefault(slot, []).append(file["id"])
        return out

    def run(self, application: str, entrypoint: str, *, inputs: dict[str, list[str | os.PathLike]] | None = None,
            params: dict | None = None, version: str | None = None, out: str | os.PathLike | None = None,
            dataset_name: str | None = None, on_log: Callable[[str], None] | None = None,
            timeout: float | None = None) -> dict:
        """Upload local inputs, submit, wait for the end and, if it succeeded and `out` is given, download the
        outputs there; answers the finished job (check its `status`)."""
        name = dataset_name or default_dataset_name(application, entrypoint)
        job = self.submit(application, entrypoint, params=params, version=version,
                          inputs=self.upload_inputs(inputs or {}, name))
        job = self.wait(job["id"], timeout=timeout, on_log=on_log)
        if job["status"] == "succeeded" and out is not None:
            self.download_outputs(job["id"], out)
        return job

    def run_pipeline(self, pipeline: str, *, inputs: dict[str, list[str | os.PathLike]] | None = None,
                     params: dict[str, dict] | None = None, **kwargs: Any) -> dict:
        """`run` for a pipeline of the registry (`pipelines()`); `params` per step: `{"fit": {...}}`. The
        outputs download below each step's name (`fit/locs.h5`, `render/render.png`)."""
        return self.run(PIPELINE, pipeline, inputs=inputs, params=params, **kwargs)

    def pipelines(self) -> list[dict]:
        """The registry's pipelines: each entrypoint of the `pipeline` application, with its inputs and steps."""
        return [entry for app in self.applications() if app["name"] == PIPELINE
                for version in app["versions"] for entry in version["entrypoints"]]

    # --- the model registry ------------------------------------------------------------------------------

    def models(self) -> list[dict]:
        """Trained models you may fit with: yours, those shared with you, the bundled ones."""
        return self.request("GET", "models/")

    def model_file(self, name: str, slot: str = "model") -> str:
        """The file id of the model called `name` (yours first, then shared and bundled ones)."""
        found = sorted((m for m in self.models() if m["name"] == name), key=lambda m: not m["mine"])
        if not found:
            raise LocusError(f"input {slot}={name}: no such file, file id or model name (`locus models` "
                             "lists the models)")
        return str(found[0]["file"])

    def update_model(self, model_id: str, **fields: str) -> dict:
        """Rename (`name=`) or share (`visibility=` private | institution | public) a model of yours."""
        return self.request("PATCH", f"models/{model_id}/", json=fields)

    def delete_model(self, model_id: str) -> None:
        """Remove a model of yours from the registry (its file stays an output of the job that trained it)."""
        self.request("DELETE", f"models/{model_id}/")

    # --- jobs --------------------------------------------------------------------------------------------

    def submit(self, application: str, entrypoint: str, *, params: dict | None = None,
               inputs: dict[str, list[str]] | None = None, version: str | None = None,
               notify: str | None = None, idempotency_key: str | None = None) -> dict:
        """Submit a job; answers it. The Idempotency-Key (a fresh one unless given) makes retries safe: the
        portal answers the first submission's job instead of making another."""
        body: dict[str, Any] = {"application": application, "entrypoint": entrypoint,
                                "params": params or {}, "inputs": inputs or {}}
        if version:
            body["version"] = version
        if notify:
            body["notify"] = notify
        key = idempotency_key or f"client-{uuid.uuid4()}"
        return self.request("POST", "jobs/", json=body, headers={"Idempotency-Key": key})

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"jobs/{job_id}/")

    def jobs(self, *, status: str | None = None, application: str | None = None) -> Iterator[dict]:
        """Every job of yours, newest first, following the cursor pages."""
        page = self.request("GET", "jobs/", params={k: v for k, v in
                                                    (("status", status), ("application", application)) if v})
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self.request("GET", page["next"])

    def cancel(self, job_id: str) -> dict:
        return self.request("POST", f"jobs/{job_id}/cancel/")

    def rerun(self, pipeline_id: str, from_step: str) -> dict:
        """A pipeline again from one of its steps; the succeeded steps before it are reused. Not retried: a
        lost answer could mean a second pipeline."""
        return self.request("POST", f"jobs/{pipeline_id}/rerun/", json={"from_step": from_step}, retry=False)

    def logs(self, job_id: str, offset: int = 0) -> dict:
        """`{text, next_offset, complete}` from byte `offset`."""
        return self.request("GET", f"jobs/{job_id}/logs/", params={"offset": offset})

    def read_log(self, job_id: str, offset: int, on_text: Callable[[str], object]) -> int:
        """Hand every piece of the log from `offset` to `on_text` (a long log comes in several reads);
        answers the offset to continue from."""
        while True:
            part = self.logs(job_id, offset)
            if part["text"]:
                on_text(part["text"])
            if part["next_offset"] == offset or part["complete"]:
                return part["next_offset"]
            offset = part["next_offset"]

    def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 2.0,
             on_log: Callable[[str], None] | None = None,
             on_progress: Callable[[dict], None] | None = None) -> dict:
        """Poll until the job ends; answers it. `on_log` gets each new piece of the log as it arrives."""
        deadline = None if timeout is None else time.monotonic() + timeout
        offset = 0
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if on_log:
                offset = self.read_log(job_id, offset, on_log)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise LocusError(f"job {job_id} is still {job['status']} after {timeout:g} s")
            time.sleep(poll)

    def outputs(self, job_id: str) -> list[dict]:
        return self.request("GET", f"jobs/{job_id}/outputs/")

    def download(self, file: dict, dest: str | os.PathLike) -> Path:
        """Fetch one file (an entry of `outputs()` or a File) to `dest`: into a folder (under the output's
        `path`, so `ch0/locs.csv` and `ch1/locs.csv` stay apart) or to a file path. Written under a temporary
        name, its size and sha256 checked, then renamed: `dest` is never half-written."""
        dest = Path(dest)
        target = dest.joinpath(*_relative_parts(file.get("path") or file["name"])) if dest.is_dir() else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries):
            try:
                return self._fetch(file, target)
            except requests.RequestException as exc:  # the connection broke mid-transfer: start again
                if attempt == self.retries - 1:
                    raise LocusError(f"{file['name']}: download interrupted ({type(exc).__name__}); "
                                     "nothing was written") from None
                self.policy.sleep(self.policy.backoff(attempt))
        raise AssertionError("unreachable")

    def _fetch(self, file: dict, target: Path) -> Path:
        response = self.request("GET", f"files/{file['id']}/download/", expect_json=False, stream=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, response:
                for block in response.iter_content(HASH_CHUNK):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
            if size != file["size"] or digest.hexdigest() != file["sha256"]:
                raise LocusError(f"{file['name']}: the download does not match its checksum "
                                 f"({size} of {file['size']} bytes); nothing was written")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def download_outputs(self, job_id: str, folder: str | os.PathLike) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [self.download(out, folder) for out in self.outputs(job_id)]


def default_dataset_name(application: str, entrypoint: str) -> str:
    """The dataset local inputs go into unless named: what ran and when (a pipeline by its name alone)."""
    what = entrypoint if application == PIPELINE else f"{application} {entrypoint}"
    return f"{what} {time.strftime('%Y-%m-%d %H:%M')}"


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _relative_parts(path: str) -> list[str]:
    """The parts of a server-given relative path that stay inside the download folder."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return parts or ["file"]


def _error(response: requests.Response) -> LocusError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return LocusError(str(error.get("message") or response.reason), status=response.status_code,
                          code=str(error.get("code") or "error"), fields=error.get("fields"), body=body)
    return LocusError(f"HTTP {response.status_code} {response.reason}", status=response.status_code, body=body)

