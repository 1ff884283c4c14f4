"""Production serves its own static files (WhiteNoise): after `collectstatic`, and without it."""

import subprocess
import sys

import pytest

from tests.security.test_web_security import ROOT, production_env

REQUEST = """
import django
django.setup()
from django.test import Client
r = Client().get("/static/portal/locus.css", secure=True, HTTP_HOST="locus.example.org")
body = b"".join(r.streaming_content) if r.streaming else r.content
print(r.status_code, r.get("Cache-Control", ""), b"font-family" in body)
"""


def production_request(tmp_path) -> list[str]:
    out = subprocess.run([sys.executable, "-c", REQUEST], cwd=ROOT, env=production_env(tmp_path), check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return out.strip().splitlines()[-1].split()


@pytest.mark.parametrize("collect", [True, False], ids=["collected", "not-collected"])
def test_production_serves_the_stylesheet(tmp_path, collect):
    if collect:
        done = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT,
                              env=production_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "var" / "static" / "portal" / "locus.css.gz").is_file()  # compressed copy
    status, *_, found = production_request(tmp_path)
    assert status == "200" and found == "True"
