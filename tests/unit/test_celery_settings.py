"""Design §4: the broker's visibility timeout is above the longest registry timeout, on both Celery apps.

Below it, Redis would hand a job that is still running (legitimately, within its `timeout_s`) to a second
worker. The portal derives its value from the registry; the worker agent may not import `algorithms`
(design §1), so it keeps a constant, and this test is what ties that constant to `registry.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celery
import pytest
import yaml
from django.conf import settings

from workers import celery_app

REGISTRY = Path(__file__).resolve().parents[2] / "algorithms" / "registry.yaml"


def _timeouts(node: Any) -> list[int]:
    """Every `timeout_s` in the YAML tree, read as data (independent of the registry loader)."""
    if isinstance(node, dict):
        found = [int(v) for k, v in node.items() if k == "timeout_s"]
        return found + [t for v in node.values() for t in _timeouts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _timeouts(v)]
    return []


@pytest.fixture(scope="module")
def longest_timeout_s() -> int:
    timeouts = _timeouts(yaml.safe_load(REGISTRY.read_text()))
    assert timeouts, f"no timeout_s in {REGISTRY}"
    return max(timeouts)


def test_portal_visibility_timeout_exceeds_the_longest_registry_timeout(longest_timeout_s):
    from portal.celery import app

    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > longest_timeout_s
    assert app.conf.broker_transport_options["visibility_timeout"] > longest_timeout_s


def test_worker_visibility_timeout_exceeds_the_longest_registry_timeout(longest_timeout_s, tmp_path,
                                                                        monkeypatch):
    monkeypatch.delenv("LOCUS_VISIBILITY_TIMEOUT_S", raising=False)
    monkeypatch.setenv("LOCUS_BROKER_DIR", str(tmp_path / "broker"))
    monkeypatch.setenv("CELERY_BROKER_URL", "")  # make_app writes the resolved URL back; undone after
    previous = celery.current_app._get_current_object()
    try:
        for broker in ("redis://127.0.0.1:6379/15", None):  # Redis in production, the filesystem embedded
            app = celery_app.make_app(["cpu", "gpu.80"], broker_url=broker, gpu=True)
            assert app.conf.broker_transport_options["visibility_timeout"] > longest_timeout_s, broker
    finally:
        previous.set_current()  # make_app sets the agent's app as current; the portal's tasks need theirs
    assert longest_timeout_s < celery_app.DEFAULT_VISIBILITY_TIMEOUT_S
