"""`python -m workers enroll | start | probe`: attach this machine to a Locus portal and run its jobs.

Exit codes: 0 done, 1 the portal refused or could not be reached, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlparse

from workers import capabilities
from workers.client import PortalError, WorkerClient
from workers.config import ConfigError, WorkerConfig, config_path, load, save

log = logging.getLogger("locus.worker")

EXIT_OK, EXIT_PORTAL, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Wrong arguments or files: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's usage dump is noise in a systemd journal
        raise BadInput(f"{message} (see `python -m workers --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m workers", description="Locus worker agent.")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOCUS_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    enroll = sub.add_parser("enroll", help="exchange a one-time enrollment token for this worker's token")
    enroll.add_argument("--portal", required=True, help="portal base URL, e.g. https://locus.example.org")
    enroll.add_argument(
        "--enrollment-token", required=True, help="one-time token from the portal's workers page"
    )
    enroll.add_argument(
        "--name", default=platform.node(), help="name shown on the portal (default: hostname)"
    )
    enroll.add_argument(
        "--config", help="config file (default: $LOCUS_WORKER_CONFIG or ~/.config/locus/worker.json)"
    )
    enroll.add_argument("--force", action="store_true", help="replace an existing config file")
    enroll.add_argument("--broker", help="broker URL to store in the config (it may hold a password: 0600)")

    start = sub.add_parser("start", help="heartbeat and run jobs until SIGTERM")
    start.add_argument("--config", help="config file written by enroll")
    start.add_argument(
        "--queues",
        default="auto",
        help="'auto' (the queues the portal allows) or a list like cpu,gpu.8,gpu.16",
    )
    start.add_argument(
        "--pull", action="store_true", help="take jobs by HTTP long poll (no broker access needed)"
    )
    start.add_argument(
        "--scratch",
        default=os.environ.get("LOCUS_SCRATCH") or "~/.cache/locus/scratch",
        help="folder for per-attempt inputs/outputs (removed after each attempt)",
    )
    start.add_argument(
        "--concurrency", type=int, default=0, help="jobs at once (default: one per GPU, 1 without a GPU)"
    )
    start.add_argument(
        "--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL when a job is stopped"
    )
    start.add_argument(
        "--drain",
        type=float,
        default=float(os.environ.get("LOCUS_DRAIN_S") or 0),
        help="on SIGTERM, seconds a running job may take to finish before it is stopped and handed back "
        "(default 0: hand it back at once)",
    )
    start.add_argument(
        "--broker",
        help="broker URL (default: $CELERY_BROKER_URL, then the config's broker_url, "
        "then the filesystem broker in $LOCUS_BROKER_DIR)",
    )

    sub.add_parser("probe", help="print this machine's capabilities as JSON")
    return parser


def _portal_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BadInput(f"--portal must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _probe() -> dict:
    try:
        return capabilities.probe()
    except ValueError as exc:  # a malformed LOCUS_FAKE_GPUS
        raise BadInput(str(exc)) from None


def cmd_enroll(args: argparse.Namespace) -> int:
    portal = _portal_url(args.portal)
    if not args.enrollment_token.strip():
        raise BadInput("--enrollment-token is empty")
    path = config_path(args.config)
    if path.exists() and not args.force:
        raise BadInput(f"{path} already exists (this machine is enrolled); use --force to replace it")
    client = WorkerClient(portal)
    answer = client.enroll(args.enrollment_token.strip(), args.name, _probe())
    config = WorkerConfig(
        portal=portal,
        worker_id=str(answer["worker_id"]),
        token=str(answer["token"]),
        queues=list(answer.get("queues") or []),
        broker_url=args.broker,
    )
    save(config, path)
    queues = ",".join(config.queues) or "(none yet)"
    print(f"enrolled as worker {config.worker_id} at {portal}; queues {queues}; config written to {path}")
    return EXIT_OK


def _with_own_queue(queues: list[str], worker_id: str) -> list[str]:
    from workers.celery_app import JOB_QUEUE_RE

    own = f"worker.{worker_id}"
    return queues if own in queues or not JOB_QUEUE_RE.match(own) else [own, *queues]


def cmd_start(args: argparse.Namespace) -> int:
    from workers.agent import StartOptions, WorkerHeartbeat, run_broker, run_pull
    from workers.celery_app import validate_queues
    from workers.runner import RunnerSettings

    if args.concurrency < 0:
        raise BadInput("--concurrency must be ≥ 0")
    if args.grace < 0:
        raise BadInput("--grace must be ≥ 0")
    if args.drain < 0:
        raise BadInput("--drain must be ≥ 0")
    try:
        config = load(config_path(args.config))
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    explicit = None
    if args.queues != "auto":
        try:
            explicit = validate_queues([q.strip() for q in args.queues.split(",") if q.strip()])
        except ValueError as exc:
            raise BadInput(f"--queues: {exc}") from None
    scratch = Path(args.scratch).expanduser()
    try:
        scratch.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--scratch {scratch}: {exc}") from None

    caps = _probe()
    gpu_count = len(caps["gpus"])
    log.info(
        "worker %s: %d CPU, %.1f GB RAM, GPUs: %s",
        config.worker_id,
        caps["cpu_count"],
        caps["memory_gb"],
        ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in caps["gpus"]) or "none",
    )
    client = WorkerClient(config.portal, config.token)
    settings = RunnerSettings(scratch=scratch, grace_s=args.grace, drain_s=args.drain)
    heartbeat = WorkerHeartbeat(client, caps, settings.shutdown)
    heartbeat.beat()  # fails fast on a wrong portal or a revoked token
    heartbeat.start()
    options = StartOptions(
        # An explicit list still gets the worker's own queue, first: jobs pinned to it (its selftest) wait there.
        queues=_with_own_queue(explicit, config.worker_id) if explicit else heartbeat.queues,
        concurrency=args.concurrency or max(1, gpu_count),
        gpu_count=gpu_count,
        broker_url=args.broker or os.environ.get("CELERY_BROKER_URL") or config.broker_url,
        worker_name=f"locus-worker-{config.worker_id}",
    )
    if args.pull:
        return run_pull(client, settings, options)
    if not options.queues:
        raise BadInput("the portal allows this worker no queues; ask an admin, or pass --queues / --pull")
    try:
        validate_queues(options.queues)
    except ValueError as exc:
        raise BadInput(f"queues from the portal: {exc}") from None
    return run_broker(client, settings, options)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        logging.basicConfig(
            stream=sys.stderr, level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if args.command == "probe":
            print(json.dumps(_probe(), indent=2))
            return EXIT_OK
        return {"enroll": cmd_enroll, "start": cmd_start}[args.command](args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PortalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PORTAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
