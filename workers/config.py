"""The agent's one config file: `{portal, worker_id, token}` written by `enroll`, read by `start`.

It holds a credential, so it is created 0600 (before any byte is written, not chmod-ed afterwards) and
replaced atomically. Location: `--config`, else `LOCUS_WORKER_CONFIG`, else `~/.config/locus/worker.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "LOCUS_WORKER_CONFIG"


class ConfigError(ValueError):
    """The config file is missing or unusable; the message says which file and what to do."""


@dataclass
class WorkerConfig:
    portal: str
    worker_id: str
    token: str
    queues: list[str] = field(default_factory=list)  # as last answered by the portal, for information
    broker_url: str | None = None


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "locus" / "worker.json"


def save(config: WorkerConfig, path: Path) -> None:
    """Write atomically with mode 0600 from the start, so the token is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({k: v for k, v in asdict(config).items() if v is not None}, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)  # O_CREAT's mode is masked by umask; make it exact
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: Path) -> WorkerConfig:
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no worker config at {path}: run `python -m workers enroll` first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read worker config {path}: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), str) for k in ("portal", "worker_id", "token")
    ):
        raise ConfigError(f"worker config {path} must hold portal, worker_id and token")
    return WorkerConfig(
        portal=raw["portal"],
        worker_id=raw["worker_id"],
        token=raw["token"],
        queues=list(raw.get("queues") or []),
        broker_url=raw.get("broker_url"),
    )
