"""`locus`: run Locus jobs and pipelines from a terminal — upload local files, submit, follow, download.

    export LOCUS_URL=https://locus.example.org LOCUS_TOKEN=...
    locus run localize -i frames=movie.tif --out results/          # a pipeline: one name
    locus run diagnostics checksum -i files=movie.tif -p copy=true  # an entrypoint: application and name
    locus run localize -i frames=movie.tif -p fit.prob_threshold=0.6     # a pipeline step's parameter: STEP.NAME

Exit codes: 0 the job succeeded (or the command did what it says), 1 the job failed or was cancelled,
2 the request was refused or the portal unreachable (one line on stderr, never a traceback), 130 interrupted
(the job keeps running on the portal; `cancel` stops it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from locus_client.api import PIPELINE, TERMINAL, Locus, LocusError, default_dataset_name


class Line:
    """One status line on stderr, redrawn in place on a terminal and printed once per change elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.last:
            sys.stderr.write("\n")
        self.last = ""


def _value(text: str) -> Any:
    """`-p k=v`: JSON when it parses (numbers, true, lists), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _params(items: list[str]) -> dict[str, Any]:
    """`-p a.b=v` sets params["a"]["b"]: a pipeline step's parameter, or a field of a structured one."""
    params: dict[str, Any] = {}
    for key, value in _pairs(items, "-p"):
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LocusError(f"-p {key}={value}: {part} is given a value and fields")
        node[leaf] = _value(value)
    return params


def _target(words: list[str]) -> tuple[str, str]:
    """`run localize` (a pipeline) or `run APPLICATION ENTRYPOINT`."""
    if len(words) == 1:
        return PIPELINE, words[0]
    if len(words) == 2:
        return words[0], words[1]
    raise LocusError(f"run {' '.join(words)}: give a pipeline (`run localize`) or an application and its "
                     "entrypoint (`run decode-plex fit`)")


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocusError(f"{flag} {item!r}: expected NAME=VALUE")
        pairs.append((key, value))
    return pairs


def _bar(done: int, total: int, width: int = 24) -> str:
    fraction = done / total if total else 1.0
    filled = int(round(fraction * width))
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%}"


def _upload_inputs(locus: Locus, specs: list[tuple[str, str]], dataset_name: str, line: Line) -> dict:
    grouped: dict[str, list[str]] = {}
    for slot, value in specs:
        grouped.setdefault(slot, []).append(value)

    def show(path: Path, done: int, total: int) -> None:
        line.show(f"upload {path.name} ({total / 1e6:.1f} MB) {_bar(done, total)}")
        if done == total:
            line.done()

    return locus.upload_inputs(grouped, dataset_name, progress=show)


def _follow(locus: Locus, job_id: str, line: Line, show_log: bool) -> dict:
    def progress(job: dict) -> None:
        stage = (job.get("progress_detail") or {}).get("stage") or job.get("waiting_reason") or ""
        if job.get("steps"):  # a pipeline: which of its steps are under way
            stage = " ".join(f"{step['step']}:{step['status']}" for step in job["steps"])
        line.show(f"job {job_id[:8]} {job['status']:<9} {_bar(round(1000 * (job.get('progress') or 0)), 1000)}"
                  f" {stage}".rstrip())

    def log(text: str) -> None:
        line.done()
        sys.stderr.write(text if text.endswith("\n") else text + "\n")

    job = locus.wait(job_id, on_progress=progress, on_log=log if show_log else None)
    line.done()
    return job


def _finish(locus: Locus, job: dict, out: Path | None) -> int:
    if job["status"] != "succeeded":
        print(f"job {job['id']} {job['status']}: {job.get('reason') or job.get('failure_class') or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    if out is not None:
        for path in locus.download_outputs(job["id"], out):
            print(path)
    return 0


def cmd_run(locus: Locus, args) -> int:
    line = Line()
    application, entrypoint = _target(args.what)
    params = _params(args.param)
    dataset_name = args.dataset or default_dataset_name(application, entrypoint)
    inputs = _upload_inputs(locus, _pairs(args.input, "-i"), dataset_name, line)
    job = locus.submit(application, entrypoint, params=params, inputs=inputs, version=args.version)
    print(job["id"])
    if args.no_wait:
        return 0
    job = _follow(locus, job["id"], line, not args.quiet)
    return _finish(locus, job, Path(args.out or f"locus-{job['id'][:8]}"))


def cmd_wait(locus: Locus, args) -> int:
    job = _follow(locus, args.job, Line(), not args.quiet)
    return _finish(locus, job, Path(args.out) if args.out else None)


def cmd_status(locus: Locus, args) -> int:
    job = locus.job(args.job)
    print(json.dumps(job, indent=2))
    return 0 if job["status"] != "failed" else 1


def cmd_logs(locus: Locus, args) -> int:
    locus.read_log(args.job, 0, sys.stdout.write)
    return 0


def cmd_rerun(locus: Locus, args) -> int:
    job = locus.rerun(args.job, args.from_step)
    print(job["id"])
    return 0


def cmd_cancel(locus: Locus, args) -> int:
    print(locus.cancel(args.job)["status"])
    return 0


def cmd_download(locus: Locus, args) -> int:
    job = locus.job(args.job)
    if job["status"] not in TERMINAL:
        raise LocusError(f"job {args.job} is still {job['status']}: wait for it (`wait {args.job}`)")
    for path in locus.download_outputs(args.job, Path(args.out or f"locus-{args.job[:8]}")):
        print(path)
    return 0


def cmd_jobs(locus: Locus, args) -> int:
    for i, job in enumerate(locus.jobs(status=args.status, application=args.application)):
        if i >= args.limit:
            break
        print(f"{job['id']}  {job['status']:<9}  {job['application']} {job['entrypoint']}  {job['created_at']}")
    return 0


def cmd_pipelines(locus: Locus, args) -> int:
    for entry in locus.pipelines():
        inputs = ", ".join(f"{k} ({' '.join(v['suffixes']) or 'any'}{', optional' if not v['min'] else ''})"
                           for k, v in entry["inputs"].items())
        steps = " → ".join(step["name"] for step in entry.get("steps") or [])
        print(f"{entry['name']}  {entry['summary']}\n    steps: {steps}\n    inputs: {inputs}")
    return 0


def cmd_models(locus: Locus, args) -> int:
    if args.action == "list":
        for model in locus.models():
            metrics = model.get("metrics") or {}
            shown = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if isinstance(v, int | float))[:60]
            print(f"{model['id']}  {model['name']:<28}  {model['visibility']:<11}  "
                  f"{model['owner'] or 'bundled':<12}  {(model['size'] or 0) / 1e6:5.1f} MB  {shown}".rstrip())
        return 0
    if not args.model:
        raise LocusError(f"models {args.action}: give the model's id")
    if args.action == "delete":
        locus.delete_model(args.model)
        print(f"deleted {args.model}")
        return 0
    fields = {k: v for k, v in (("name", args.name), ("visibility", args.visibility)) if v}
    if not fields:
        raise LocusError("models update: give --name or --visibility")
    model = locus.update_model(args.model, **fields)
    print(f"{model['id']}  {model['name']}  {model['visibility']}")
    return 0


def cmd_apps(locus: Locus, args) -> int:
    for app in locus.applications():
        for version in app["versions"]:
            for entry in version["entrypoints"]:
                inputs = ", ".join(f"{k} ({' '.join(v['suffixes']) or 'any'})" for k, v in entry["inputs"].items())
                print(f"{app['name']} {entry['name']} [{version['version']}]  {entry['summary']}"
                      + (f"  inputs: {inputs}" if inputs else ""))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="locus", description="Run Locus jobs and pipelines from a terminal.")
    p.add_argument("--url", help="portal address (default: $LOCUS_URL)")
    p.add_argument("--token", help="API token (default: $LOCUS_TOKEN)")
    p.add_argument("--retries", type=int, default=6, help="tries per call on a dropped connection, 5xx or 429")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="upload local inputs, submit, follow the log, download the outputs")
    run.add_argument("what", nargs="+", metavar="PIPELINE | APPLICATION ENTRYPOINT",
                     help="a pipeline (`localize`; see `pipelines`) or an entrypoint (`decode-plex fit`; see `apps`)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a parameter (VALUE read as JSON when it parses); STEP.NAME for a pipeline step's")
    run.add_argument("-i", "--input", action="append", default=[], metavar="NAME=PATH",
                     help="an input: a local file (uploaded), the id of a file on the portal, or a model's name")
    run.add_argument("--version", help="application version (default: the registry's)")
    run.add_argument("--dataset", help="name of the dataset the local inputs go into")
    run.add_argument("--out", help="folder for the outputs (default: locus-<job id>)")
    run.add_argument("--no-wait", action="store_true", help="print the job id and return")
    run.add_argument("-q", "--quiet", action="store_true", help="do not stream the job's log")
    wait = sub.add_parser("wait", help="follow a job to its end; download its outputs with --out")
    wait.add_argument("job")
    wait.add_argument("--out")
    wait.add_argument("-q", "--quiet", action="store_true")
    for name, text in (("status", "the job as JSON"), ("logs", "the whole log"), ("cancel", "stop the job")):
        sub.add_parser(name, help=text).add_argument("job")
    rerun = sub.add_parser("rerun", help="run a pipeline again from one of its steps (earlier steps reused)")
    rerun.add_argument("job")
    rerun.add_argument("--from-step", required=True, help="the step to run again, with every step after it")
    download = sub.add_parser("download", help="download a finished job's outputs")
    download.add_argument("job")
    download.add_argument("--out")
    jobs = sub.add_parser("jobs", help="your jobs, newest first")
    jobs.add_argument("--status")
    jobs.add_argument("--application")
    jobs.add_argument("--limit", type=int, default=20)
    sub.add_parser("apps", help="what can be run: applications, entrypoints and their inputs")
    sub.add_parser("pipelines", help="the pipelines: their steps and inputs")
    models = sub.add_parser("models", help="the trained models you may fit with; rename, share or delete yours")
    models.add_argument("action", nargs="?", default="list", choices=["list", "update", "delete"])
    models.add_argument("model", nargs="?", help="the model's id (update, delete)")
    models.add_argument("--name", help="update: a new name")
    models.add_argument("--visibility", choices=["private", "institution", "public"], help="update: who may use it")
    return p


COMMANDS = {"run": cmd_run, "wait": cmd_wait, "status": cmd_status, "logs": cmd_logs, "cancel": cmd_cancel,
            "rerun": cmd_rerun, "download": cmd_download, "jobs": cmd_jobs, "apps": cmd_apps,
            "pipelines": cmd_pipelines, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        locus = Locus(args.url, args.token, retries=args.retries)
        return COMMANDS[args.command](locus, args)
    except LocusError as exc:
        field = f" ({', '.join(f'{k}: {v}' for k, v in exc.fields.items())})" if len(exc.fields) > 1 else ""
        print(f"locus: error: {exc}{field}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the output folder cannot be written, an input cannot be read
        print(f"locus: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlocus: interrupted; the job keeps running on the portal (`cancel JOB` stops it)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
