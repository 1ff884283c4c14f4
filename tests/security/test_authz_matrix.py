"""The authorization matrix: every URL pattern × every principal × every verb, with the expected status.

The endpoint list is read from the URL resolver, so a new endpoint that is not classified in `RULES`
fails `test_every_url_pattern_is_classified` until someone decides who may reach it. Path parameters are
filled with real objects owned by `user` (alice): a dataset with files, a running job whose attempt was
claimed by `worker`, a queued job, alice's API token, a live transfer URL. For every request:

- the status is one of the expected ones (any unexpected 2xx fails the test), never a 5xx;
- every 4xx under /api/ carries the one JSON error shape `{"error": {"code", "message", ...}}`;
- a 2xx answered to another user, an institution admin or staff never mentions alice's objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.cache import cache
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from jobs import services, states, storage
from jobs.models import Institution, Membership, WorkerToken
from portal.accounts.models import ApiToken
from tests.conftest import _make_user

pytestmark = pytest.mark.django_db

VERBS = ("GET", "PUT", "PATCH", "POST", "DELETE")  # DELETE last: it may remove the object under test
PRINCIPALS = ("anonymous", "user", "other_user", "inst_admin", "staff", "worker", "other_worker",
              "revoked_token", "revoked_worker")
API_USERS = ("user", "other_user", "inst_admin", "staff")  # authenticated on the user API (token)
WORKERS = ("worker", "other_worker")  # authenticated on the worker API
SESSIONS = API_USERS  # logged in to the HTML pages as well


# --- the URL configuration ------------------------------------------------------------------------------

def url_patterns() -> list[tuple[str, str, str]]:
    """(namespace:name, route) of every URL pattern, walking nested resolvers; route is the full pattern."""
    out = []

    def walk(resolver, prefix: str, namespace: str | None):
        for p in resolver.url_patterns:
            if isinstance(p, URLResolver):
                ns = ":".join(x for x in (namespace, p.namespace) if x) or None
                walk(p, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern):
                name = f"{namespace}:{p.name}" if namespace else str(p.name)
                out.append((name, prefix + str(p.pattern)))

    walk(get_resolver(), "", None)
    return out


def concrete_path(route: str, values: dict[str, str]) -> str:
    """A request path for a route: regex groups and path converters replaced by `values`."""
    path = route.replace("^", "").replace("$", "")

    def group(m):
        return values[m.group(1)]

    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", group, path)
    path = re.sub(r"<drf_format_suffix:format>", ".json", path)
    path = re.sub(r"<(?:\w+:)?(\w+)>", group, path)
    path = path.replace("\\.", ".").replace("/?", "/")
    return "/" + path


# --- the classification ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """Who reaches an endpoint. `kind` says how principals are treated; `ok` is the owner's/allowed
    principal's expected statuses per allowed verb (verbs not in `ok` answer 405 to anyone authenticated)."""

    kind: str
    ok: dict[str, set[int]] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)  # verb → request body
    json_errors: bool = True  # 4xx answers carry the API's JSON error shape (not so for HTML docs)


def ok(**verbs) -> dict[str, set[int]]:
    return {verb.upper(): ({v} if isinstance(v, int) else set(v)) for verb, v in verbs.items()}


RULES: dict[str, Rule] = {
    # User API: objects of one owner (a foreign id is a 404), collections of one's own.
    "api-root": Rule("user-collection", ok(get=200)),
    "applications": Rule("user-collection", ok(get=200)),
    "usage": Rule("user-collection", ok(get=200)),  # each sees their own (staff all); alice's ids never appear
    "dataset-list": Rule("user-collection", ok(get=200, post=201), body={"POST": {"name": "new"}}),
    "dataset-detail": Rule("user-object", ok(get=200, patch=200, delete=409), body={"PATCH": {"name": "renamed"}}),
    "dataset-files": Rule("user-object", ok(get=200, post=201), body={"POST": "upload"}),
    "dataset-presigned-uploads": Rule("user-object", ok(post=400), body={
        "POST": {"name": "a.tif", "size": 3, "sha256": "0" * 64}}),  # 400: local storage has no presigned PUTs
    "file-list": Rule("user-collection", ok(get=200)),
    "file-detail": Rule("user-object", ok(get=200)),
    "file-complete": Rule("user-object", ok(post=200)),
    "file-download": Rule("user-object", ok(get=200)),
    "job-list": Rule("user-collection", ok(get=200, post=201), body={
        "POST": {"application": "diagnostics", "entrypoint": "selftest"}}),
    "job-detail": Rule("user-object", ok(get=200)),
    "job-cancel": Rule("user-object", ok(post=200)),
    "job-rerun": Rule("user-object", ok(post=400), body={"POST": {"from_step": "fit"}}),  # 400: not a pipeline
    "job-logs": Rule("user-object", ok(get=200)),
    "job-outputs": Rule("user-object", ok(get=200)),
    "job-bundle": Rule("user-object", ok(get=200)),
    "dataset-uploads": Rule("user-object", ok(post=201), body={
        "POST": {"name": "big.tif", "size": 3, "sha256": "0" * 64}}),
    "upload-detail": Rule("user-object", ok(get=200, delete=204)),
    "upload-chunk": Rule("user-object", ok(put=400)),  # 400: no offset given
    "upload-complete": Rule("user-object", ok(post=400)),  # 400: not every byte arrived yet
    # Models: one's own, those shared with one's institutions, public ones; alice's is private.
    "trained-model-list": Rule("user-collection", ok(get=200)),
    "trained-model-detail": Rule("user-object", ok(get=200, patch=200, delete=204), body={"PATCH": {"name": "x"}}),
    "models": Rule("html-login", ok(get=200)),
    "model-share": Rule("html-owner", ok(post=302)),
    "model-delete": Rule("html-owner", ok(post=302)),
    "token-list": Rule("user-collection", ok(get=200, post=201), body={"POST": {"name": "script"}}),
    "token-detail": Rule("user-object", ok(delete=204)),
    # Fleet: staff, and admins of the worker's institution; plain users see none (404 on an id).
    "worker-list": Rule("fleet-collection", ok(get=200)),
    "worker-detail": Rule("fleet-object", ok(get=200)),
    "worker-revoke": Rule("fleet-object", ok(post=200)),
    "enrollment-token-list": Rule("enrollment", ok(post=201), body={"POST": {"institution": "lab", "hours": 1}}),
    # Worker API: worker tokens only; attempt calls only on the caller's own attempts.
    "worker-enroll": Rule("enroll", ok(post=403), body={"POST": {"enrollment_token": "len_not-a-real-token"}}),
    "worker-heartbeat": Rule("worker", ok(post=200), body={"POST": {}}),
    "worker-claim-next": Rule("worker", ok(post=(200, 204)), body={"POST": {"wait_s": 0}}),
    "worker-claim": Rule("worker", ok(post=200)),  # the queued job: any covering worker may claim it
    "worker-attempt-heartbeat": Rule("attempt", ok(post=200), body={"POST": {"progress": {"progress": 0.5}}}),
    "worker-attempt-log": Rule("attempt", ok(post=200), body={"POST": {"text": "hello\n"}}),
    "worker-attempt-outputs": Rule("attempt", ok(post=201), body={
        "POST": {"name": "locs.csv", "size": 3, "sha256": "0" * 64}}),
    "worker-attempt-complete": Rule("attempt", ok(post=200), body={
        "POST": {"exit_code": 2, "failure_class": "input", "reason": "bad frames"}}),
    # A signed, short-lived URL is its own credential (the agent sends no header): whoever holds it may GET.
    "transfer": Rule("transfer", ok(get=200)),
    # Public API description.
    "schema": Rule("public-api", ok(get=200)),
    "api-docs": Rule("public-api", ok(get=200), json_errors=False),  # an HTML page (Redoc)
    # HTML pages.
    "healthz": Rule("html-public", ok(get=200)),
    "favicon": Rule("html-public", ok(get=200)),
    "home": Rule("html-login", ok(get=200)),
    "jobs-live": Rule("html-login", ok(get=200)),
    "job-new": Rule("html-login", ok(get=200, post=200)),  # 200: no application chosen yet
    "job-page": Rule("html-owner", ok(get=200)),
    "job-page-live": Rule("html-owner", ok(get=200)),
    "job-page-cancel": Rule("html-owner", ok(post=302)),
    "job-page-rerun": Rule("html-owner", ok(post=302)),
    "job-page-log": Rule("html-owner", ok(get=200)),
    "file-page": Rule("html-owner", ok(get=200)),
    "datasets": Rule("html-login", ok(get=200, post=400)),  # 400: the empty form is invalid
    "dataset-page": Rule("html-owner", ok(get=200)),
    "dataset-delete": Rule("html-owner", ok(post=302)),  # refused (a job uses it) and sent back
    "signup": Rule("html-public", ok(get=200, post=400)),
    "profile": Rule("html-login", ok(get=200, post=400)),
    "tokens": Rule("html-login", ok(get=200, post=400)),  # 400: a token needs a name
    "token-revoke": Rule("html-owner", ok(post=302)),
    "institutions": Rule("html-login", ok(get=200)),
    "institution-page": Rule("html-institution", ok(get=200)),
    "institution-member": Rule("html-institution", ok(post=302)),
    "approvals": Rule("html-login", ok(get=200)),  # lists only what the caller may approve
    "approval-decide": Rule("html-staff", ok(post=302)),
    # Workers pages: staff and institution admins (owners of workers too); anyone else a 404.
    "workers": Rule("html-fleet", ok(get=200)),
    "worker-token-page": Rule("html-fleet", ok(post=400)),  # 400: the empty form again, with its errors
    "worker-revoke-page": Rule("html-fleet", ok(post=302)),
    "usage-page": Rule("html-login", ok(get=200)),
    "login": Rule("html-public", ok(get=200, post=200, put=200)),  # 200: the form again (wrong password)
    "logout": Rule("html-public", ok(post=302)),
    "password_reset": Rule("html-public", ok(get=200, post=200, put=200)),
    "password_reset_done": Rule("html-public", ok(get=200)),
    # An invalid link renders the "invalid link" page before django looks at the verb.
    "password_reset_confirm": Rule("html-public", ok(get=200, post=200, put=200, patch=200, delete=200)),
    "password_reset_complete": Rule("html-public", ok(get=200)),
    "password_change": Rule("html-login", ok(get=200, post=200, put=200)),
    "password_change_done": Rule("html-login", ok(get=200)),
    # Django admin: staff only, everyone else is sent to its log-in page (or refused the verb).
    "admin:*": Rule("admin", ok(get=200)),
    "admin:login": Rule("html-public", ok(get=(200, 302), post=200, put=200)),  # staff: on to the index
}


def rule_name(name: str, route: str) -> str:
    if name.startswith("admin:") and name != "admin:login":
        return "admin:*"
    return name


def expected(rule: Rule, principal: str, verb: str) -> set[int]:
    """The statuses `principal` may get for `verb` on an endpoint classified by `rule`."""
    allowed = verb in rule.ok
    kind = rule.kind
    if kind in ("user-object", "user-collection", "fleet-object", "fleet-collection", "enrollment"):
        if principal not in API_USERS:
            return {401}
        if not allowed:
            return {405}
        if kind == "user-collection" or (kind == "user-object" and principal == "user"):
            return rule.ok[verb]
        if kind == "user-object":
            return {404}
        if kind == "fleet-collection":
            return rule.ok[verb]
        if kind == "fleet-object":
            return rule.ok[verb] if principal in ("staff", "inst_admin") else {404}
        # enrollment tokens: staff, or an admin of the named institution; others are refused (400).
        return rule.ok[verb] if principal in ("staff", "inst_admin") else {400}
    if kind in ("worker", "attempt"):
        if principal not in WORKERS:
            return {401}
        if not allowed:
            return {405}
        if kind == "attempt" and principal != "worker":
            return {403}
        return rule.ok[verb]
    if kind == "enroll":  # no authentication at all: headers are ignored
        return rule.ok[verb] if allowed else {405}
    if kind == "transfer":
        return rule.ok[verb] if allowed else {405}
    if kind == "public-api":  # no authentication at all: a stale token is ignored, not an error
        return rule.ok[verb] if allowed else {405}
    if kind == "html-public":
        return rule.ok[verb] if allowed else {405}
    if kind == "html-login":
        if not allowed:
            return {405, 302} if principal not in SESSIONS else {405}
        return rule.ok[verb] if principal in SESSIONS else {302}
    if kind == "html-owner":
        if not allowed:
            return {405}
        if principal == "user":
            return rule.ok[verb]
        return {404} if principal in SESSIONS else {302}
    if kind == "html-fleet":
        if not allowed:
            return {405, 302} if principal not in SESSIONS else {405}
        if principal not in SESSIONS:
            return {302}
        return rule.ok[verb] if principal in ("staff", "inst_admin") else {404}
    if kind in ("html-institution", "html-staff"):  # lab's admin (and staff) / staff only; others: 404
        allowed_principals = ("staff", "inst_admin") if kind == "html-institution" else ("staff",)
        if not allowed:
            return {405}
        if principal in allowed_principals:
            return rule.ok[verb]
        return {404} if principal in SESSIONS else {302}
    if kind == "admin":  # staff may do anything the admin offers; the point is that nobody else may
        return set(range(200, 500)) if principal == "staff" else {302, 405}
    raise AssertionError(f"unknown rule kind {kind!r}")


def test_every_url_pattern_is_classified():
    unclassified = sorted({f"{name} ({route})" for name, route in url_patterns()
                           if rule_name(name, route) not in RULES})
    assert not unclassified, "classify these endpoints in RULES (who may reach them?): " + ", ".join(unclassified)


def test_every_rule_names_an_existing_endpoint():
    names = {rule_name(name, route) for name, route in url_patterns()}
    assert set(RULES) - names == set(), "stale rules for endpoints that no longer exist"


# --- the world the requests act on ------------------------------------------------------------------------

@pytest.fixture
def world(user, other_user, staff, worker, other_worker, dataset, test_registry):
    """Alice's objects, the cast's clients, and the values for every path parameter."""
    import io

    lab = Institution.objects.create(slug="lab", name="Lab")
    inst_admin = _make_user("carol")
    Membership.objects.create(user=inst_admin, institution=lab, is_admin=True)
    worker.worker.institution = lab
    worker.worker.save(update_fields=["institution"])

    frames = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00frames"))
    cal = services.add_file(dataset, "beads_3dcal.mat", io.BytesIO(b"MATLAB"))
    running, _ = services.submit(user, application="fit", entrypoint="run",
                                 inputs={"frames": [str(frames.pk)], "calibration": [str(cal.pk)]})
    attempt = states.claim(running.pk, worker.worker)  # hardware is not checked here: a GPU job on a CPU box
    queued, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    url = storage.download_url(frames.key, scope={"job": str(running.pk), "attempt": str(attempt.pk),
                                                  "file": str(frames.pk)}, filename=frames.name)
    transfer_token = url.rstrip("/").rsplit("/", 1)[-1]
    alice_token, _ = ApiToken.issue(user, "alice's script")
    from jobs.models import TrainedModel

    model = TrainedModel.objects.create(name="alice's model", owner=user, file=cal, reuse_key="0" * 64)
    from jobs import uploads

    upload, _ = uploads.start(dataset, "big.tif", 10, "1" * 64)

    def client(owner=None, header: str | None = None) -> APIClient:
        c = APIClient()
        if owner is not None:
            c.force_login(owner)
        if header:
            c.credentials(HTTP_AUTHORIZATION=header)
        return c

    def token_for(u) -> str:
        return "Token " + ApiToken.issue(u, "matrix")[1]

    revoked, revoked_raw = ApiToken.issue(user, "old")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=states.timezone.now())
    old_worker_token, old_worker_raw = WorkerToken.issue(worker.worker)
    WorkerToken.objects.filter(pk=old_worker_token.pk).update(revoked_at=states.timezone.now())
    clients = {
        "anonymous": client(),
        "user": client(user, token_for(user)),
        "other_user": client(other_user, token_for(other_user)),
        "inst_admin": client(inst_admin, token_for(inst_admin)),
        "staff": client(staff, token_for(staff)),
        "worker": worker,
        "other_worker": other_worker,
        "revoked_token": client(None, f"Token {revoked_raw}"),
        "revoked_worker": client(None, f"Worker {old_worker_raw}"),
    }
    secrets_of_alice = {str(dataset.pk), str(frames.pk), str(cal.pk), str(running.pk), str(queued.pk),
                        str(attempt.pk), attempt.fencing_token, f'"id":{alice_token.pk},', alice_token.prefix,
                        str(upload.pk)}
    return {
        "clients": clients, "attempt": attempt, "secrets": secrets_of_alice,
        "values": {"dataset": str(dataset.pk), "file": str(frames.pk), "job": str(running.pk),
                   "queued_job": str(queued.pk), "worker": str(worker.worker.pk), "token": str(alice_token.pk),
                   "attempt_id": str(attempt.pk), "transfer": transfer_token, "upload": str(upload.pk),
                   "user_id": str(user.pk), "inst_admin_id": str(inst_admin.pk),
                   "uidb64": "MQ", "reset_token": "set-password", "model": str(model.pk)},
    }


def path_values(name: str, values: dict[str, str]) -> dict[str, str]:
    """Which real object fills `pk` (and friends) for the endpoint called `name`."""
    kind = name.split("-")[0]
    pk = {"dataset": values["dataset"], "file": values["file"], "job": values["job"],
          "worker": values["worker"], "token": values["token"], "upload": values["upload"],
          "trained": values["model"]}.get(kind, "")
    return {"dataset_id": values["dataset"], "file_id": values["file"], "slug": "lab", "model_id": values["model"],
            "user_id": values["inst_admin_id"] if name == "institution-member" else values["user_id"], "pk": pk, "format": "json", "job_id": values["job"] if name == "job-detail" else values["queued_job"],
            "attempt_id": values["attempt_id"], "token": values["transfer"] if name == "transfer"
            else values["reset_token"], "uidb64": values["uidb64"], "object_id": "1", "app_label": "jobs",
            "url": "x"}


def send(client: APIClient, verb: str, path: str, rule: Rule, fencing: str) -> Any:
    body = rule.body.get(verb)
    extra = {"HTTP_X_FENCING_TOKEN": fencing}
    if rule.json_errors:
        extra["HTTP_ACCEPT"] = "application/json"  # what an API client sends (the schema defaults to YAML)
    if body == "upload":
        import io

        fh = io.BytesIO(b"II*\x00more")
        fh.name = "more.tif"
        return client.post(path, {"file": fh}, format="multipart", **extra) if verb == "POST" else \
            getattr(client, verb.lower())(path, **extra)
    method = getattr(client, verb.lower())
    if body is None:
        return method(path, **extra)
    return method(path, body, format="json", **extra)


def endpoints_by_rule() -> dict[str, list[tuple[str, str]]]:
    """Every (name, route) to request, grouped by rule; admin pages with object ids are left to the
    parameterless ones (the whole admin is behind the same staff check)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, route in url_patterns():
        if name.startswith("admin:") and "<" in route:
            continue
        out.setdefault(rule_name(name, route), []).append((name, route))
    return out


ENDPOINTS = endpoints_by_rule()


@pytest.mark.parametrize("rule_key", sorted(ENDPOINTS))
def test_authorization_matrix(world, rule_key):
    """Each principal acts on a fresh copy of the world (a savepoint rolled back after it)."""
    rule = RULES[rule_key]
    failures = []
    for name, route in ENDPOINTS[rule_key]:
        path = concrete_path(route, path_values(name, world["values"]))
        for principal in PRINCIPALS:
            cache.clear()  # log-in failure counters and API throttles start afresh for each principal
            with transaction.atomic():
                failures += check(world, rule, principal, path)
                transaction.set_rollback(True)
    assert not failures, "\n".join(failures)


def check(world, rule: Rule, principal: str, path: str) -> list[str]:
    client = world["clients"][principal]
    failures = []
    for verb in VERBS:
        response = send(client, verb, path, rule, world["attempt"].fencing_token)
        status = response.status_code
        want = expected(rule, principal, verb)
        where = f"{principal} {verb} {path} → {status}"
        if status >= 500:
            failures.append(f"{where}: server error")
            continue
        if status not in want:
            failures.append(f"{where}, expected {sorted(want)}")
        if path.startswith("/api/") and rule.json_errors and 400 <= status < 500:
            try:
                error = response.json()["error"]
                assert isinstance(error, dict) and error.get("code") and error.get("message")
            except Exception:  # noqa: BLE001 - anything but the one JSON error shape
                failures.append(f"{where}: 4xx without the JSON error body: {response.content[:200]!r}")
        if 200 <= status < 300 and principal in ("other_user", "inst_admin") or (
                principal == "staff" and path.startswith("/api/")):
            content = b"".join(response.streaming_content) if response.streaming else response.content
            text = content.decode(errors="replace")
            leaked = sorted(s for s in world["secrets"] if s and s in text)
            if leaked and 200 <= status < 300:
                failures.append(f"{where}: mentions alice's objects {leaked}")
    return failures


# --- worker scope, beyond the matrix ----------------------------------------------------------------------

def _transfer_path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_worker_claim_hands_out_urls_for_the_jobs_own_inputs_only(world, worker, dataset):
    import io

    from jobs.models import Job

    services.add_file(dataset, "unrelated.tif", io.BytesIO(b"II*\x00secret"))
    job = Job.objects.get(pk=world["values"]["job"])
    payload = services.claim_payload(world["attempt"])
    assert {i["file"] for i in payload["inputs"]} == {str(f.pk) for f in job.inputs.all()}
    for item in payload["inputs"]:
        response = APIClient().get(_transfer_path(item["url"]))
        assert response.status_code == 200
        assert b"".join(response.streaming_content).startswith(b"II*" if item["name"].endswith(".tif") else b"MAT")


def test_transfer_url_cannot_reach_a_file_outside_its_job(world, dataset):
    import io

    other = services.add_file(dataset, "other.tif", io.BytesIO(b"II*\x00not-an-input"))
    attempt = world["attempt"]
    # Even a correctly signed URL (the portal's own key) for a file that is not an input of the job is refused.
    url = storage.download_url(other.key, scope={"job": str(attempt.job_id), "attempt": str(attempt.pk),
                                                 "file": str(other.pk)}, filename=other.name)
    response = APIClient().get(_transfer_path(url))
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_transfer_url_is_refused_when_tampered_when_the_attempt_is_over_and_for_another_verb(world):
    path = f"/api/v1/worker/transfer/{world['values']['transfer']}"
    client = APIClient()
    assert client.get(path).status_code == 200
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.get(tampered).status_code == 403
    assert client.put(path, b"overwrite", content_type="application/octet-stream").status_code == 405
    states.cancel(world["attempt"].job)
    response = client.get(path)
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_output_upload_url_is_scoped_to_one_key_size_and_checksum(world, worker):
    from tests.conftest import sha256

    attempt = world["attempt"]
    data = b"x,y\n1,2\n"
    target = worker.post(f"/api/v1/worker/attempts/{attempt.pk}/outputs",
                         {"name": "../../../../etc/locs.csv", "size": len(data), "sha256": sha256(data)},
                         format="json", HTTP_X_FENCING_TOKEN=attempt.fencing_token).json()
    assert target["key"].startswith(storage.output_prefix(attempt.job.owner_id, attempt.job_id, attempt.number))
    assert ".." not in target["key"]
    client = APIClient()
    path = _transfer_path(target["url"])
    assert client.get(path).status_code == 405  # a PUT URL does not read
    bad = client.put(path, b"other bytes!", content_type="application/octet-stream")
    assert bad.status_code in (400, 413) and "error" in bad.json()
    assert client.put(path, data, content_type="application/octet-stream").status_code == 201


def test_stolen_fencing_token_does_not_let_another_worker_act_on_the_attempt(world, other_worker):
    attempt = world["attempt"]
    for verb, body in (("heartbeat", {}), ("log", {"text": "x"}), ("complete", {"exit_code": 0})):
        response = other_worker.post(f"/api/v1/worker/attempts/{attempt.pk}/{verb}", body, format="json",
                                     HTTP_X_FENCING_TOKEN=attempt.fencing_token)
        assert response.status_code == 403, (verb, response.content)
    attempt.refresh_from_db()
    assert attempt.status == "running"
