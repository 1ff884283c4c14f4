"""Value sets the chart is rendered with, and small helpers to find things in the rendered objects."""

from __future__ import annotations

import copy
from typing import Any


def merge(*parts: dict) -> dict:
    """Deep merge, later parts win (like several `-f` files)."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


EXTERNAL = {  # every external service given inline: the chart keeps them in its own Secret
    "secretKey": {"value": "k" * 50},
    "database": {"url": "postgres://locus:pw@db.example.org:5432/locus"},
    "broker": {"url": "redis://:pw@redis.example.org:6379/0"},
    "email": {"url": "smtp+tls://locus:pw@mail.example.org:587"},
    "s3": {"bucket": "locus-data", "endpointUrl": "https://s3.example.org", "accessKeyId": "AKIDEXAMPLE",
           "secretAccessKey": "wJalrXUtnFEMI"},
    "ingress": {"enabled": True, "className": "nginx", "hosts": ["locus.example.org"],
                "tls": [{"secretName": "locus-tls", "hosts": ["locus.example.org"]}]},
}
EXISTING_SECRETS = {  # every credential from Secrets the operator manages
    "secretKey": {"existingSecret": "django-secret"},
    "database": {"existingSecret": "pg-app", "existingSecretKey": "uri"},
    "broker": {"existingSecret": "redis-auth"},
    "email": {"existingSecret": "smtp-relay"},
    "s3": {"bucket": "locus-data", "existingSecret": "s3-keys"},
}
GPU_ON = {
    "workers": {
        "gpu-16": {"enabled": True, "worker": {"workerId": 7, "token": "worker-token-16"},
                   "nodeSelector": {"nvidia.com/gpu.present": "true"}},
        "mpi-a100": {"enabled": True, "queues": ["pool.mpi.gpu.80", "gpu.40", "gpu.80"], "gpu": 2,
                     "maxJobSeconds": 86400, "runtimeClassName": "nvidia",
                     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mpi",
                                      "effect": "NoSchedule"}],
                     "worker": {"existingSecret": "mpi-worker"}},
    },
}
GPU_OFF = {"workers": {"gpu-16": {"enabled": False}}}
KEDA_ON = {"keda": {"enabled": True}}
KEDA_OFF = {"keda": {"enabled": False}}

VALUE_SETS: dict[str, dict] = {
    "default": {},
    "gpu-on": GPU_ON,
    "gpu-off": GPU_OFF,
    "keda-on": KEDA_ON,
    "keda-off-gpu-on": merge(KEDA_OFF, GPU_ON),
    "keda-on-gpu-on": merge(KEDA_ON, GPU_ON),
    "external-inline": EXTERNAL,
    "external-secrets": merge(EXISTING_SECRETS, KEDA_ON, GPU_ON),
    "everything": merge(EXTERNAL, KEDA_ON, GPU_ON, {
        "keda": {"connection": {"existingSecret": "keda-readonly", "existingSecretKey": "url"}},
        "web": {"autoscaling": {"enabled": False}, "replicas": 3},
        "networkPolicy": {"egress": {"restrict": True, "to": [
            {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
             "ports": [{"port": 5432, "protocol": "TCP"}, {"port": 6379, "protocol": "TCP"}]}]}},
        "migrations": {"backoffLimit": 1},
    }),
}


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def component(docs: list[dict], kind: str, name: str) -> list[dict]:
    return [d for d in of_kind(docs, kind)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name]


def pod_spec(obj: dict) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    """env name -> (secret name, key) for every secretKeyRef of a container."""
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def arg_value(container: dict, flag: str) -> str:
    for arg in container.get("args", []):
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {container.get('args')}")
