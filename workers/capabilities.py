"""What this machine can run: CPU, RAM and GPUs (model, memory, compute capability).

The portal routes jobs by these numbers (design §4), so they must be what the hardware really has. GPUs are
read from `nvidia-smi` when present, else from torch *in a subprocess* (the agent itself must never
initialise CUDA: a forked job child could not use it then), else there are none. `LOCUS_FAKE_GPUS` (a JSON
list of `{name, memory_gb, compute_capability}`) replaces the probe so tests can pretend a GPU exists.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from workers import __version__

CODE_ROOT = Path(__file__).resolve().parent.parent
FAKE_GPUS_ENV = "LOCUS_FAKE_GPUS"

_TORCH_PROBE = """
import json
try:
    import torch
except ImportError:
    print("[]"); raise SystemExit
gpus = []
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"name": p.name, "memory_gb": round(p.total_memory / 1e9, 2),
                     "compute_capability": f"{p.major}.{p.minor}"})
print(json.dumps(gpus))
"""


def memory_gb() -> float:
    """Physical RAM in GB (decimal, like the registry's `memory_gb`); 0 when the OS does not say."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 2)
    except (ValueError, OSError, AttributeError):
        return 0.0


def _nvidia_smi_gpus(timeout_s: float = 20) -> list[dict[str, Any]] | None:
    """GPUs as nvidia-smi lists them; None when nvidia-smi is absent or fails (no driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    # Older drivers do not know `compute_cap`; ask again without it rather than report no GPU.
    for fields in ("name,memory.total,compute_cap", "name,memory.total"):
        try:
            out = subprocess.run(
                [exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode == 0:
            return [_parse_smi_line(line) for line in out.stdout.splitlines() if line.strip()]
    return None


def _parse_smi_line(line: str) -> dict[str, Any]:
    parts = [p.strip() for p in line.split(",")]
    mib = float(parts[1]) if len(parts) > 1 and parts[1].replace(".", "", 1).isdigit() else 0.0
    cc = parts[2] if len(parts) > 2 and parts[2] not in ("", "[N/A]") else None
    return {"name": parts[0], "memory_gb": round(mib * 1024 * 1024 / 1e9, 2), "compute_capability": cc}


def _torch_gpus(timeout_s: float = 120) -> list[dict[str, Any]]:
    """GPUs as torch sees them, asked in a child process so CUDA is never initialised in the agent."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _TORCH_PROBE],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=CODE_ROOT,
        )
        gpus = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return []
    return gpus if isinstance(gpus, list) else []


def visible_devices() -> list[str] | None:
    """The agent's own `CUDA_VISIBLE_DEVICES` as a list (None when unset): an operator may lend only some cards."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    ids = [p.strip() for p in raw.split(",") if p.strip()]
    # CUDA stops at the first invalid entry, so "-1" (a common "no GPU") hides everything after it.
    return ids[: next((i for i, p in enumerate(ids) if p.startswith("-")), len(ids))]


def device_ids(slots: list[int]) -> list[str]:
    """CUDA_VISIBLE_DEVICES entries for the agent's GPU slots 0..n-1 (its visible cards, in order)."""
    visible = visible_devices()
    return [visible[i] if visible is not None and i < len(visible) else str(i) for i in slots]


def fake_gpus() -> list[dict[str, Any]] | None:
    """The GPUs `LOCUS_FAKE_GPUS` pretends exist; None when unset. Raises ValueError on a malformed value."""
    raw = os.environ.get(FAKE_GPUS_ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        gpus = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{FAKE_GPUS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(gpus, list) or not all(isinstance(g, dict) and "memory_gb" in g for g in gpus):
        raise ValueError(f'{FAKE_GPUS_ENV} must be a JSON list like [{{"name": "A100", "memory_gb": 40}}]')
    return [
        {
            "name": str(g.get("name", "fake GPU")),
            "memory_gb": float(g["memory_gb"]),
            "compute_capability": g.get("compute_capability"),
        }
        for g in gpus
    ]


def probe_gpus() -> list[dict[str, Any]]:
    """GPUs from LOCUS_FAKE_GPUS, else nvidia-smi, else torch in a subprocess, else none."""
    fake = fake_gpus()
    if fake is not None:
        return fake
    smi = _nvidia_smi_gpus()
    if smi is not None:
        # nvidia-smi lists every card; report only those this agent may use (numeric ids, PCI order).
        visible = visible_devices()
        if visible is not None and all(v.isdigit() for v in visible):
            smi = [smi[int(v)] for v in visible if int(v) < len(smi)]
        return smi
    return _torch_gpus()  # torch in the child already honours CUDA_VISIBLE_DEVICES


def code_version() -> str:
    """Which algorithm code this worker runs: `LOCUS_CODE_VERSION`, else the git commit, else the package."""
    env = os.environ.get("LOCUS_CODE_VERSION")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=CODE_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return __version__


def probe() -> dict[str, Any]:
    """The capabilities document sent with enroll and every worker heartbeat."""
    return {
        "cpu_count": os.cpu_count() or 1,
        "memory_gb": memory_gb(),
        "gpus": probe_gpus(),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "code_version": code_version(),
        "agent_version": __version__,
    }
