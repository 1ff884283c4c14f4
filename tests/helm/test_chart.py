"""The Helm chart, rendered by a real helm binary: lint, schema, Kubernetes validity and what it promises."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.conftest import CHART, REPO
from tests.helm.values_sets import (
    EXISTING_SECRETS,
    EXTERNAL,
    GPU_ON,
    KEDA_ON,
    VALUE_SETS,
    arg_value,
    component,
    env_of,
    merge,
    named,
    of_kind,
    pod_spec,
    secret_refs,
)

# The newest Kubernetes kubernetes-validate knows, and the oldest the chart declares (Chart.yaml kubeVersion).
K8S_VERSIONS = [kubernetes_validate.latest_version(), "1.27.0"]
GPU = "nvidia.com/gpu"
SETS = pytest.mark.parametrize("value_set", sorted(VALUE_SETS))

# KEDA's CRDs are not in kubernetes-validate: the fields this chart uses, from keda.sh/v1alpha1.
_NAME_REF = {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": {"type": "string", "minLength": 1}, "kind": {"type": "string"}}}
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                  "name": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {"type": "object", "additionalProperties": False, "properties": {
                    "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False,
                                                      "properties": {"behavior": {"type": "object"}}}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                    "properties": {"type": {"type": "string"}, "name": {"type": "string"},
                                   "metadata": {"type": "object",
                                                "additionalProperties": {"type": "string"}},
                                   "authenticationRef": _NAME_REF}}},
            }}},
    },
    "TriggerAuthentication": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"spec": {
            "type": "object", "additionalProperties": False,
            "properties": {"secretTargetRef": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                "properties": {"parameter": {"type": "string"}, "name": {"type": "string", "minLength": 1},
                               "key": {"type": "string", "minLength": 1}}}}}}},
    },
}


def _deployments(docs):
    return of_kind(docs, "Deployment")


def _workers(docs):
    return {d["metadata"]["labels"]["locus.io/pool"]: d for d in component(docs, "Deployment", "worker")}


# --- helm lint and the values schema -----------------------------------------------------------------------

@SETS
def test_helm_lint_is_clean(chart, value_set):
    out = chart.lint(VALUE_SETS[value_set])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("bad, message", [
    ({"workers": {"cpu": {"queues": ["notify"]}}}, "does not match pattern"),
    ({"workers": {"Big_Pool": {"enabled": True, "queues": ["cpu"]}}}, "Big_Pool"),
    ({"workers": {"new": {"enabled": True}}}, "queues"),
    ({"keda": {"enabled": "yes"}}, "boolean"),
    ({"database": {"url": "mysql://db/locus"}}, "does not match pattern"),
    ({"tasks": {"queues": ["gpu.16"]}}, "/tasks/queues/0"),
    ({"replicaCount": 3}, "replicaCount"),
])
def test_values_schema_refuses_wrong_values(chart, bad, message):
    assert message in chart.template_error(bad)


# --- every object is valid Kubernetes --------------------------------------------------------------------

_VALIDATED: set[str] = set()  # objects rendered alike by several value sets are validated once


@SETS
def test_every_rendered_object_validates(chart, value_set):
    docs = chart.template(VALUE_SETS[value_set])
    assert docs
    for doc in docs:
        key = json.dumps(doc, sort_keys=True)
        if key in _VALIDATED:
            continue
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
            if behavior := doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior"):
                # KEDA hands this block to the HPA it creates: check it as the HPA's own field.
                hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
                       "spec": {"scaleTargetRef": doc["spec"]["scaleTargetRef"], "maxReplicas": 1,
                                "behavior": behavior}}
                kubernetes_validate.validate(hpa, K8S_VERSIONS[0], strict=True)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {exc}")
        _VALIDATED.add(key)


@SETS
def test_object_names_are_unique_and_labelled(chart, value_set):
    docs = chart.template(VALUE_SETS[value_set])
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "locus"


# --- processes ---------------------------------------------------------------------------------------------

@SETS
def test_exactly_one_beat_replaced_with_recreate(chart, value_set):
    docs = chart.template(VALUE_SETS[value_set])
    beats = [d for d in _deployments(docs)
             for c in pod_spec(d)["containers"] if "beat" in c.get("args", []) or "-B" in c.get("args", [])]
    assert len(beats) == 1
    beat = beats[0]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in of_kind(docs, "HorizontalPodAutoscaler")}
    scaled |= {o["spec"]["scaleTargetRef"]["name"] for o in of_kind(docs, "ScaledObject")}
    assert beat["metadata"]["name"] not in scaled


def test_web_runs_gunicorn_with_probes_hpa_pdb_ingress(chart):
    docs = chart.template(EXTERNAL)
    web = named(docs, "Deployment", "locus-web")
    container = pod_spec(web)["containers"][0]
    assert container["command"] == ["gunicorn"] and container["args"][0] == "portal.wsgi"
    assert "--bind=0.0.0.0:8000" in container["args"]
    assert "--config=python:portal.gunicorn_conf" in container["args"]  # threaded, with the I/O time limit
    assert "--threads=8" in container["args"]
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert "replicas" not in web["spec"]  # the HPA owns it
    assert named(docs, "HorizontalPodAutoscaler", "locus-web")["spec"]["scaleTargetRef"]["name"] == "locus-web"
    pdb = named(docs, "PodDisruptionBudget", "locus-web")
    assert pdb["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]
    ingress = of_kind(docs, "Ingress")[0]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == named(docs, "Service", "locus-web")["metadata"]["name"]
    assert ingress["spec"]["tls"][0]["secretName"] == "locus-tls"


def test_no_disruption_budget_for_a_single_web_pod(chart):
    docs = chart.template({"web": {"autoscaling": {"enabled": False}, "replicas": 1}})
    assert not of_kind(docs, "PodDisruptionBudget")
    assert named(docs, "Deployment", "locus-web")["spec"]["replicas"] == 1


def test_portal_celery_worker_takes_only_portal_queues(chart):
    tasks = named(chart.template(), "Deployment", "locus-tasks")
    container = pod_spec(tasks)["containers"][0]
    assert container["args"][:3] == ["-A", "portal", "worker"]
    assert arg_value(container, "--queues") == "notify,maintenance"


# --- migration hook --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value_set", ["default", "external-inline", "external-secrets"])
def test_migration_job_is_a_pre_install_pre_upgrade_hook(chart, value_set):
    docs = chart.template(VALUE_SETS[value_set])
    jobs = of_kind(docs, "Job")
    assert len(jobs) == 1
    job = jobs[0]
    notes = job["metadata"]["annotations"]
    assert set(notes["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"]
    container = pod_spec(job)["containers"][0]
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # Hooks run before the release's own objects exist: the Job may use only hook objects or the
    # operator's Secrets, never the chart's ConfigMap, Secret or ServiceAccount.
    assert "envFrom" not in container
    assert "serviceAccountName" not in pod_spec(job)
    hooks = {(d["kind"], d["metadata"]["name"]): d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})}
    release_secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")} - {n for k, n in hooks if k == "Secret"}
    for name, (secret, _key) in secret_refs(container).items():
        assert secret not in release_secrets, f"{name} read from release Secret {secret}"
        if ("Secret", secret) in hooks:
            hook_secret = hooks[("Secret", secret)]
            assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(notes["helm.sh/hook-weight"])
            assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == notes["helm.sh/hook"]
    env = env_of(container)
    assert env["LOCUS_MODE"]["value"] == "production"
    assert {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_URL", "ALLOWED_HOSTS"} <= set(env)


# --- job worker pools ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_gpu_limits_only_on_gpu_pools(chart, value_set):
    values = VALUE_SETS[value_set]
    docs = chart.template(values)
    for deployment in _deployments(docs):
        spec = pod_spec(deployment)
        pool = deployment["metadata"]["labels"].get("locus.io/pool")
        gpus = merge({"workers": {"cpu": {"gpu": 0}, "gpu-16": {"gpu": 1}}}, values)["workers"].get(pool, {}).get("gpu", 0)
        container = spec["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        requests = container.get("resources", {}).get("requests", {})
        tolerated = [t for t in spec.get("tolerations", []) if t["key"] == GPU]
        if pool and gpus:
            assert limits[GPU] == gpus, deployment["metadata"]["name"]
            assert tolerated == [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
            assert container["image"].startswith("locus/locus-gpu:")
        else:
            assert GPU not in limits and GPU not in requests, deployment["metadata"]["name"]
            assert not tolerated
            assert not container["image"].startswith("locus/locus-gpu:")


def test_gpu_pool_keeps_its_own_tolerations_runtime_class_and_node_selector(chart):
    workers = _workers(chart.template(GPU_ON))
    assert set(workers) == {"cpu", "gpu-16", "mpi-a100"}
    mpi = pod_spec(workers["mpi-a100"])
    assert {t["key"] for t in mpi["tolerations"]} == {"dedicated", GPU}
    assert mpi["runtimeClassName"] == "nvidia"
    gpu16 = pod_spec(workers["gpu-16"])
    assert gpu16["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert arg_value(gpu16["containers"][0], "--concurrency") == "1"  # one job per GPU
    assert arg_value(mpi["containers"][0], "--concurrency") == "2"
    assert "runtimeClassName" not in pod_spec(workers["cpu"]) and "runtimeClassName" not in gpu16
    assert "nodeSelector" not in pod_spec(workers["cpu"])


def test_termination_grace_exceeds_the_pools_longest_job(chart):
    values = merge(GPU_ON, {"workers": {"cpu": {"maxJobSeconds": 900}}})
    workers = _workers(chart.template(values))
    longest = {"cpu": 900, "gpu-16": 43200, "mpi-a100": 86400}
    for pool, deployment in workers.items():
        spec = pod_spec(deployment)
        grace = spec["terminationGracePeriodSeconds"]
        job_stop = float(arg_value(spec["containers"][0], "--grace"))
        assert grace > longest[pool] + job_stop, pool


def test_worker_runs_the_agent_on_its_queues_with_its_identity_only(chart):
    docs = chart.template(merge(EXTERNAL, GPU_ON))
    for pool, deployment in _workers(docs).items():
        container = pod_spec(deployment)["containers"][0]
        assert container["command"] == ["python", "-m", "workers"] and container["args"][0] == "start"
        assert "--broker" not in " ".join(container["args"])  # the broker password stays out of argv
        queues = arg_value(container, "--queues").split(",")
        assert queues == merge({"workers": {"cpu": {"queues": ["cpu"]}, "gpu-16": {"queues": ["gpu.8", "gpu.16"]}}},
                               GPU_ON)["workers"][pool]["queues"]
        # Job workers never see the database, Django's key, S3 keys or SMTP: only the broker URL.
        assert set(secret_refs(container)) == {"CELERY_BROKER_URL"}
        assert "envFrom" not in container
        env = env_of(container)
        mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["identity"]
        assert env["LOCUS_WORKER_CONFIG"]["value"] == f"{mount}/worker.json"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert env["LOCUS_CODE_VERSION"]["value"] == container["image"].rsplit(":", 1)[1]
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/dev/shm", "/scratch", "/tmp"}
        assert pod_spec(deployment)["securityContext"]["runAsNonRoot"] is True


def test_worker_identity_secret_is_a_config_the_agent_accepts(chart, tmp_path):
    from workers.config import load

    docs = chart.template(GPU_ON)
    workers = _workers(docs)
    volume = {v["name"]: v for v in pod_spec(workers["gpu-16"])["volumes"]}["identity"]
    secret = named(docs, "Secret", volume["secret"]["secretName"])
    path = tmp_path / "worker.json"
    path.write_text(secret["stringData"]["worker.json"])
    config = load(path)
    assert (config.worker_id, config.token) == ("7", "worker-token-16")
    assert config.portal == "http://locus-web.locus.svc:8000"
    # A pool naming its own Secret gets no chart-made identity.
    assert {v["name"]: v for v in pod_spec(workers["mpi-a100"])["volumes"]}["identity"]["secret"]["secretName"] == "mpi-worker"
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("mpi-a100-identity")]


# --- KEDA ------------------------------------------------------------------------------------------------

QUERY_RE = re.compile(r"^SELECT count\(\*\) FROM jobs_job WHERE status IN \('queued','running'\) AND queue IN \((.+)\)$")


def keda_queues(scaled_object: dict) -> list[str]:
    (trigger,) = scaled_object["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    match = QUERY_RE.match(trigger["metadata"]["query"])
    assert match, trigger["metadata"]["query"]
    return [q.strip().strip("'") for q in match.group(1).split(",")]


@pytest.mark.parametrize("value_set", ["keda-on", "keda-on-gpu-on", "external-secrets", "everything"])
def test_keda_scaled_object_per_pool_counts_its_queues(chart, value_set):
    docs = chart.template(VALUE_SETS[value_set])
    workers = _workers(docs)
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in of_kind(docs, "ScaledObject")}
    assert set(scaled) == {d["metadata"]["name"] for d in workers.values()}
    auths = {a["metadata"]["name"]: a for a in of_kind(docs, "TriggerAuthentication")}
    for deployment in workers.values():
        obj = scaled[deployment["metadata"]["name"]]
        container = pod_spec(deployment)["containers"][0]
        assert keda_queues(obj) == arg_value(container, "--queues").split(",")
        trigger = obj["spec"]["triggers"][0]
        assert trigger["metadata"]["targetQueryValue"] == arg_value(container, "--concurrency")
        assert trigger["metadata"]["activationTargetQueryValue"] == "0"
        assert obj["spec"]["minReplicaCount"] == 0  # scale to zero
        assert "replicas" not in deployment["spec"]  # KEDA owns it; a fixed count would fight the HPA
        auth = auths[trigger["authenticationRef"]["name"]]
        (ref,) = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "connection"


def test_keda_reads_the_database_url_from_wherever_it_is_kept(chart):
    def ref(values):
        (auth,) = of_kind(chart.template(values), "TriggerAuthentication")
        return auth["spec"]["secretTargetRef"][0]["name"], auth["spec"]["secretTargetRef"][0]["key"]

    assert ref(merge(KEDA_ON, EXTERNAL)) == ("locus-env", "DATABASE_URL")
    assert ref(merge(KEDA_ON, EXISTING_SECRETS)) == ("pg-app", "uri")
    assert ref(VALUE_SETS["everything"]) == ("keda-readonly", "url")
    secret = named(chart.template(merge(KEDA_ON, EXTERNAL)), "Secret", "locus-env")
    assert base64.b64decode(secret["data"]["DATABASE_URL"]).decode() == EXTERNAL["database"]["url"]


@pytest.mark.parametrize("value_set", ["default", "gpu-on", "keda-off-gpu-on", "external-inline"])
def test_without_keda_pools_keep_fixed_replicas(chart, value_set):
    docs = chart.template(VALUE_SETS[value_set])
    assert not of_kind(docs, "ScaledObject") and not of_kind(docs, "TriggerAuthentication")
    for deployment in _workers(docs).values():
        assert deployment["spec"]["replicas"] == 1


def test_a_listed_pool_is_on_unless_disabled(chart):
    workers = _workers(chart.template({"workers": {"extra": {"queues": ["gpu.24"], "gpu": 1}, "cpu": {"enabled": False}}}))
    assert set(workers) == {"extra"}
    assert pod_spec(workers["extra"])["containers"][0]["resources"]["limits"][GPU] == 1


def test_a_pool_can_opt_out_of_keda(chart):
    docs = chart.template(merge(KEDA_ON, {"workers": {"cpu": {"keda": False, "replicas": 2}}}))
    assert not of_kind(docs, "ScaledObject")
    assert _workers(docs)["cpu"]["spec"]["replicas"] == 2


# --- configuration and secrets ---------------------------------------------------------------------------

def test_external_services_come_from_the_operators_secrets(chart):
    docs = chart.template(VALUE_SETS["external-secrets"])
    expected = {"SECRET_KEY": ("django-secret", "SECRET_KEY"), "DATABASE_URL": ("pg-app", "uri"),
                "CELERY_BROKER_URL": ("redis-auth", "CELERY_BROKER_URL"), "EMAIL_URL": ("smtp-relay", "EMAIL_URL"),
                "AWS_ACCESS_KEY_ID": ("s3-keys", "AWS_ACCESS_KEY_ID"),
                "AWS_SECRET_ACCESS_KEY": ("s3-keys", "AWS_SECRET_ACCESS_KEY")}
    for name in ("locus-web", "locus-beat", "locus-tasks"):
        container = pod_spec(named(docs, "Deployment", name))["containers"][0]
        assert secret_refs(container) == expected
    assert secret_refs(pod_spec(of_kind(docs, "Job")[0])["containers"][0]) == expected
    # Nothing is left for the chart to keep: no chart Secret, no hook copy.
    assert {s["metadata"]["name"] for s in of_kind(docs, "Secret")} == {"locus-worker-gpu-16-identity",
                                                                        "locus-worker-cpu-identity"}


def _portal_env(docs: list[dict]) -> dict[str, str]:
    """The environment a web pod starts with: ConfigMap + decoded chart Secret (inline values only)."""
    web = pod_spec(named(docs, "Deployment", "locus-web"))["containers"][0]
    config = named(docs, "ConfigMap", web["envFrom"][0]["configMapRef"]["name"])["data"]
    env = dict(config)
    for name, (secret, key) in secret_refs(web).items():
        env[name] = base64.b64decode(named(docs, "Secret", secret)["data"][key]).decode()
    return env


def test_production_settings_load_from_the_rendered_environment(chart, tmp_path):
    """The chart gives the portal every value `LOCUS_MODE=production` insists on (portal/settings.py)."""
    docs = chart.template(EXTERNAL)
    env = _portal_env(docs)
    assert env["LOCUS_MODE"] == "production"
    env["LOCUS_VAR_DIR"] = str(tmp_path)
    probe = named(docs, "Deployment", "locus-web")
    host = pod_spec(probe)["containers"][0]["readinessProbe"]["httpGet"]["httpHeaders"][0]["value"]
    code = ("import json, django; django.setup(); from django.conf import settings as s; "
            "print(json.dumps({'hosts': s.ALLOWED_HOSTS, 'url': s.PUBLIC_URL, 'db': s.DATABASES['default']['HOST'],"
            " 'storage': s.STORAGES['default']['BACKEND'], 'email': s.EMAIL_HOST, 'debug': s.DEBUG,"
            " 'redirect': s.SECURE_SSL_REDIRECT, 'csrf': s.CSRF_TRUSTED_ORIGINS}))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LOCUS_", "DATABASE_", "CELERY_"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**clean, **env}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["debug"] is False and loaded["redirect"] is False
    assert loaded["url"] == "https://locus.example.org"
    assert {"locus.example.org", "locus-web", "locus-web.locus.svc", host} <= set(loaded["hosts"])
    assert loaded["csrf"] == ["https://locus.example.org"]
    assert loaded["db"] == "db.example.org" and loaded["email"] == "mail.example.org"
    assert loaded["storage"] == "storages.backends.s3.S3Storage"


def test_checksum_annotation_follows_the_configuration(chart):
    def checksums(values):
        docs = chart.template(values)
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in _deployments(docs)}

    base = checksums({})
    assert base == checksums({})  # stable: the generated SECRET_KEY does not roll pods on every upgrade
    changed = checksums({"config": {"LOCUS_LEASE_SECONDS": "60"}})
    for name in ("locus-web", "locus-beat", "locus-tasks"):
        assert changed[name] != base[name]
    assert changed["locus-worker-cpu"] == base["locus-worker-cpu"]  # the agent does not read it
    rotated = checksums({"broker": {"url": "redis://:new@redis:6379/0"}})
    assert all(rotated[name] != base[name] for name in base)  # everyone reads the broker URL


def test_only_web_accepts_connections(chart):
    docs = chart.template(VALUE_SETS["everything"])
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    web = policies["locus-web"]
    assert web["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    peers = web["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "locus",
                                            "app.kubernetes.io/instance": "locus"}}} in peers
    rest = policies["locus-no-ingress"]["spec"]
    assert rest["policyTypes"] == ["Ingress"] and "ingress" not in rest
    assert rest["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["web"]}]
    egress = policies["locus-egress"]["spec"]["egress"]
    assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"]
    assert egress[-1]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert "locus-egress" not in {p["metadata"]["name"] for p in of_kind(chart.template(), "NetworkPolicy")}


def test_readme_gpu_pool_example_renders(chart):
    """The pool of the README's five commands is valid values and becomes a GPU worker with KEDA."""
    readme = (CHART / "README.md").read_text()
    match = re.search(r"--set-json 'workers\.([a-z0-9-]+)=(\{.*?\})'", readme, re.S)
    assert match, "README lost its --set-json pool example"
    name, pool = match.group(1), json.loads(match.group(2))
    values = merge(EXTERNAL, KEDA_ON, {"workers": {name: pool}})
    assert chart.lint(values).returncode == 0
    docs = chart.template(values)
    deployment = _workers(docs)[name]
    assert pod_spec(deployment)["containers"][0]["resources"]["limits"][GPU] == pool["gpu"]
    (scaled,) = [o for o in of_kind(docs, "ScaledObject")
                 if o["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
    assert keda_queues(scaled) == pool["queues"]


def test_readme_install_command_renders_a_complete_release(chart):
    """The README's one `helm install` command, rendered: every external service set, ingress with TLS, KEDA."""
    readme = (CHART / "README.md").read_text()
    match = re.search(r"^helm install .*?(?<!\\)$", readme, re.M | re.S)
    assert match, "README lost its helm install command"
    argv = shlex.split(match.group(0).replace("\\\n", " "))
    assert argv[:4] == ["helm", "install", "locus", "deploy/helm/locus"]
    flags = [a for a in argv[4:] if a != "--create-namespace"]
    out = chart.run("template", "locus", str(CHART), *flags)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    env = _portal_env(docs)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name], name
    assert env["LOCUS_PUBLIC_URL"] == "https://locus.example.org"
    assert of_kind(docs, "ScaledObject") and of_kind(docs, "Ingress")
    assert {d["metadata"]["namespace"] for d in docs if "namespace" in d["metadata"]} <= {"locus"}
