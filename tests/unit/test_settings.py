"""Production settings refuse to start without secrets and pass Django's deployment checks with them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "LOCUS_MODE": "production", "SECRET_KEY": "x" * 60 + "-production-secret-for-the-check",
    "ALLOWED_HOSTS": "locus.example.org", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/locus",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "EMAIL_URL": "smtp://mail.example.org:25",
}


def manage(*args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUS_", "DATABASE_", "CELERY_", "DJANGO_"))}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_production_check_deploy_is_clean():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_URL", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = manage("check", **env)
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


def test_secret_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("y" * 60 + "-from-a-file-for-the-check")
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    assert manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY_FILE=str(secret), **env).returncode == 0


def test_a_registry_typo_stops_start_up_naming_the_key(tmp_path):
    bad = (ROOT / "algorithms/registry.yaml").read_text().replace("timeout_s: 900", "timout_s: 900")
    path = tmp_path / "registry.yaml"
    path.write_text(bad)
    (tmp_path / "schemas").symlink_to(ROOT / "algorithms/schemas")
    result = manage("check", LOCUS_REGISTRY_PATH=str(path), LOCUS_VAR_DIR=str(tmp_path / "var"))
    assert result.returncode != 0
    assert "diagnostics.1.0.selftest.timout_s" in result.stderr
    result = manage("registry", "check", "--file", str(path), LOCUS_VAR_DIR=str(tmp_path / "var"))
    assert result.returncode == 1 and "timout_s: unknown key" in result.stderr
