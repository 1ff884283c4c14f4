"""docs/lab-worker.md promises a GPU worker in five commands: hold it to that, run its enroll step for real,
and keep the systemd unit consistent with the commands."""

import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from jobs.models import EnrollmentToken, Worker

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "lab-worker.md"
UNIT = ROOT / "workers" / "locus-worker.service"


def five_commands() -> list[list[str]]:
    text = GUIDE.read_text()
    block = re.search(r"## The five commands.*?```sh\n(.*?)```", text, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip()]
    assert not any(sep in line for line in lines for sep in ("&&", ";", "|", "\\")), "one command per line"
    return [shlex.split(line) for line in lines]


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_the_guide_has_exactly_five_commands():
    assert len(five_commands()) == 5


def test_the_unit_matches_the_commands():
    clone, venv, pip, enroll, enable = five_commands()
    code_root = clone[-1]
    unit = unit_settings()
    assert venv[:3] == ["python3", "-m", "venv"] and venv[3] == f"{code_root}/.venv"
    assert pip[0] == f"{code_root}/.venv/bin/pip" and pip[-1] == f"{code_root}/requirements-gpu.txt"
    assert (ROOT / "requirements-gpu.txt").read_text().startswith("-r requirements.txt")
    assert unit["WorkingDirectory"] == [code_root]
    assert unit["ExecStart"][0].split()[:4] == [f"{code_root}/.venv/bin/python", "-m", "workers", "start"]
    config = enroll[enroll.index("--config") + 1]
    assert unit["LoadCredential"] == [f"worker.json:{config}"]
    assert "LOCUS_WORKER_CONFIG=%d/worker.json" in unit["Environment"]
    assert enable == ["systemctl", "enable", "--now", f"{code_root}/workers/locus-worker.service"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit():
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line]  # /opt/locus/.venv is not on this machine
    assert problems == []


def test_the_enroll_command_works_as_written(live_server, transactional_db, tmp_path):
    """Step 4 verbatim, with this checkout for /opt/locus, a temporary folder for /etc/locus, the live portal
    and a real token."""
    _, raw = EnrollmentToken.issue(None)
    enroll = five_commands()[3]
    code_root = five_commands()[0][-1]
    config = enroll[enroll.index("--config") + 1]
    swap = {code_root: str(ROOT), "/opt/locus/.venv/bin/python": str(ROOT / ".venv" / "bin" / "python"),
            "https://locus.example.org": live_server.url, "len_PASTE_IT_HERE": raw,
            config: str(tmp_path / "etc-locus" / "worker.json")}
    argv = [swap.get(arg, arg) for arg in enroll]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUS_", "DJANGO_"))}
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "etc-locus" / "worker.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    worker = Worker.objects.get()
    assert f"enrolled as worker {worker.pk}" in done.stdout and worker.selftest_job is not None


def test_the_workers_page_gives_the_same_five_commands():
    from portal.web.workers import LAB_PC_COMMANDS

    filled = [shlex.split(line.format(portal="https://locus.example.org", token="len_PASTE_IT_HERE"))
              for line in LAB_PC_COMMANDS]
    assert filled == five_commands()
