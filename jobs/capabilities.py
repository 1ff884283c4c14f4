"""Worker capabilities as stored: read them through `normalise`, which never raises.

New capabilities are checked by the worker API's contract (jobs.api.worker_contract) before they are stored;
rows written before that check (a memory given as a string, a GPU that is not an object) are mended by
migration 0007 with this same function, and every reader goes through it too, so one bad row can never make
submissions, sweeps or the workers page fail.
"""

from __future__ import annotations

from typing import Any

from algorithms.registry import number

MAX_GPUS = 64
MAX_CPUS = 65536
MAX_MEMORY_GB = 1e6  # a petabyte of RAM or GPU memory: far above any machine, far below overflow
MAX_GPU_NAME, MAX_COMPUTE_CAPABILITY = 200, 32
TEXT_FIELDS = {"hostname": 200, "platform": 500, "python": 50, "code_version": 100, "agent_version": 50}


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def normalise(raw: Any) -> dict[str, Any]:
    """`raw` in the contract's shape: numbers finite and non-negative, strings capped, GPUs as objects."""
    raw = raw if isinstance(raw, dict) else {}
    gpus = raw.get("gpus") if isinstance(raw.get("gpus"), list) else []
    caps: dict[str, Any] = {
        "cpu_count": int(min(number(raw.get("cpu_count")), MAX_CPUS)),
        "memory_gb": min(number(raw.get("memory_gb")), MAX_MEMORY_GB),
        "gpus": [{"name": _text(g.get("name"), MAX_GPU_NAME),
                  "memory_gb": min(number(g.get("memory_gb")), MAX_MEMORY_GB),
                  "compute_capability": _text(g.get("compute_capability"), MAX_COMPUTE_CAPABILITY) or None}
                 for g in gpus[:MAX_GPUS] if isinstance(g, dict)],
    }
    caps.update({key: _text(raw.get(key), limit) for key, limit in TEXT_FIELDS.items() if key in raw})
    return caps
