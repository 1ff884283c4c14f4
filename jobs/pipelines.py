"""Running pipelines (design §9): a pipeline job and one job per step, each step queued when its inputs exist.

Submitting a pipeline (`services.submit` on an entrypoint of application `pipeline`) creates the pipeline's
own job, `running` from the start; it never reaches a worker. `advance` then submits each step whose
earlier steps have succeeded, through the same `services.submit` as any job (validation, routing by the
step's own hardware, dispatch on commit), with the outputs of those steps as its inputs. A step that fails
or is cancelled fails the pipeline, naming the step; when every step has succeeded, so has the pipeline.

`advance` is safe to run any number of times and at any moment: it runs under a lock on the pipeline's row,
a step's job is submitted with an idempotency key of its own, and what has been done is read from the rows.
It runs when a step ends (a doorbell sent by `jobs.states` on commit) and at every sweep, so a lost doorbell
only delays a pipeline by one sweep.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.db import transaction

from algorithms.pipelines import INPUT, Source
from algorithms.pipelines import QUEUE as PIPELINE_QUEUE
from jobs import services, states
from jobs.models import Job

log = logging.getLogger(__name__)

def step_jobs(pipeline: Job) -> dict[str, Job]:
    """The job of each step that has one (its own, or one reused from the pipeline it was re-run from), in
    the order of the steps."""
    reused = pipeline.spec.get("pipeline", {}).get("reused", {})
    jobs = {str(j.pk): j for j in Job.objects.filter(pk__in=list(reused.values()))}
    found = {name: jobs[job_id] for name, job_id in reused.items() if job_id in jobs}
    found.update({j.step: j for j in pipeline.steps.all()})
    order = [s["name"] for s in pipeline.spec.get("pipeline", {}).get("steps", [])]
    return {name: found[name] for name in order if name in found}  # in the pipeline's order


def _step_inputs(pipeline: Job, step: dict[str, Any], jobs: dict[str, Job]) -> dict[str, list[str]]:
    """File ids for each input slot of `step`: the user's files for `input:` sources, else the outputs of the
    earlier step that match the pattern (each file once, in order)."""
    given = services.picked_inputs(pipeline.spec)  # a sibling (Picasso .yaml) follows its file by itself
    inputs = {}
    for slot, sources in step["inputs"].items():
        ids: list[str] = []
        for text in sources:
            source = Source(*text.split(":", 1))
            found = given.get(source.pattern, []) if source.step == INPUT else [
                str(f.pk) for f in jobs[source.step].outputs.order_by("key") if source.matches(f.output_path)]
            ids += [i for i in found if i not in ids]
        inputs[slot] = ids
    return inputs


def _fail(pipeline: Job, reason: str) -> None:
    for job in Job.objects.filter(parent=pipeline, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]):
        with contextlib.suppress(states.Conflict):  # it ended meanwhile
            states.cancel(job)
    states.finish_pipeline(pipeline, Job.Status.FAILED, reason)


def advance(pipeline_id) -> str | None:
    """Bring a pipeline one move further: submit the steps that can start, or end it. Returns its status."""
    with transaction.atomic():
        pipeline = Job.objects.select_for_update().filter(pk=pipeline_id, queue=PIPELINE_QUEUE).first()
        if pipeline is None or pipeline.is_terminal:
            return pipeline.status if pipeline else None
        steps = pipeline.spec["pipeline"]["steps"]
        jobs = step_jobs(pipeline)
        for step in steps:
            job = jobs.get(step["name"])
            if job is not None and job.status in (Job.Status.FAILED, Job.Status.CANCELLED):
                _fail(pipeline, f"step {step['name']} ({step['application']} {step['entrypoint']}) {job.status}"
                                + (f": {job.reason}" if job.reason else ""))
                return Job.Status.FAILED
        for step in steps:
            if step["name"] in jobs or not all(
                    n in jobs and jobs[n].status == Job.Status.SUCCEEDED for n in step["needs"]):
                continue
            inputs = _step_inputs(pipeline, step, jobs)
            try:
                jobs[step["name"]], _ = services.submit(
                    pipeline.owner, application=step["application"], version=step["version"],
                    entrypoint=step["entrypoint"], params=pipeline.params.get(step["name"], {}), inputs=inputs,
                    notify=Job.Notify.NEVER, idempotency_key=f"pipeline:{pipeline.pk}:{step['name']}",
                    parent=pipeline, step=step["name"])
            except (services.InvalidInput, services.QuotaExceeded) as exc:
                _fail(pipeline, f"step {step['name']} could not start: {exc}")
                return Job.Status.FAILED
        done = sum(jobs[s["name"]].status == Job.Status.SUCCEEDED for s in steps if s["name"] in jobs)
        if done == len(steps):
            states.finish_pipeline(pipeline, Job.Status.SUCCEEDED, "")
            return Job.Status.SUCCEEDED
        running = sum(jobs[s["name"]].progress for s in steps
                      if s["name"] in jobs and jobs[s["name"]].status == Job.Status.RUNNING)
        Job.objects.filter(pk=pipeline.pk).update(progress=round((done + running) / len(steps), 4))
        return pipeline.status


def advance_running() -> int:
    """The sweep's pass: advance every running pipeline (a doorbell may have been lost). Returns how many
    ended in this pass (the sweep logs only passes that did something)."""
    ended = 0
    for pipeline_id in Job.objects.filter(queue=PIPELINE_QUEUE, status=Job.Status.RUNNING).values_list(
            "pk", flat=True):
        try:
            ended += advance(pipeline_id) != Job.Status.RUNNING
        except Exception:  # noqa: BLE001 - one broken pipeline must not stop the sweep for the others
            log.exception("could not advance pipeline %s", pipeline_id)
    return ended


def downstream(pipeline: Job, step: str) -> set[str]:
    """`step` and every step that needs it, directly or not."""
    steps = pipeline.spec["pipeline"]["steps"]
    if step not in {s["name"] for s in steps}:
        raise services.InvalidInput({"step": f"the pipeline has no step {step!r}"})
    found = {step}
    for s in steps:  # declared in order: a step only needs earlier ones
        if found & set(s["needs"]):
            found.add(s["name"])
    return found


def rerun_from(pipeline: Job, step: str, user) -> Job:
    """A new pipeline with the same inputs and parameters that reuses the succeeded steps before `step`."""
    if pipeline.queue != PIPELINE_QUEUE:
        raise services.InvalidInput({"job": "not a pipeline"})
    again = downstream(pipeline, step)
    reused = {name: str(job.pk) for name, job in step_jobs(pipeline).items()
              if name not in again and job.status == Job.Status.SUCCEEDED}
    with transaction.atomic():
        job, _ = services.submit(user, application=pipeline.application, version=pipeline.version,
                                 entrypoint=pipeline.entrypoint, params=pipeline.params,
                                 inputs=services.picked_inputs(pipeline.spec),
                                 notify=pipeline.notify)
        spec = job.spec
        spec["pipeline"]["reused"] = reused
        spec["pipeline"]["rerun_of"] = {"job": str(pipeline.pk), "from_step": step}
        Job.objects.filter(pk=job.pk).update(spec=spec)
        job.spec = spec
        states.event(job, "rerun", f"re-run of {pipeline.pk} from step {step}; reusing "
                                   f"{', '.join(sorted(reused)) or 'no step'}")
    return job


def chain(pipeline: Job) -> list[dict[str, Any]]:
    """Each step with its job's state, times and outputs, for the job page and the API."""
    jobs = step_jobs(pipeline)
    rows = []
    for step in pipeline.spec.get("pipeline", {}).get("steps", []):
        job = jobs.get(step["name"])
        row = {"step": step["name"], "application": step["application"], "entrypoint": step["entrypoint"],
               "summary": step["summary"], "needs": step["needs"], "job": None, "status": "waiting",
               "reused": step["name"] in pipeline.spec["pipeline"].get("reused", {})}
        if job is not None:
            row.update(job=str(job.pk), status=job.status, progress=job.progress, queue=job.queue,
                       started_at=job.started_at.isoformat() if job.started_at else None,
                       finished_at=job.finished_at.isoformat() if job.finished_at else None,
                       reason=job.reason, waiting_reason=job.waiting_reason,
                       outputs=[{"id": str(f.pk), "path": f.output_path, "size": f.size}
                                for f in job.outputs.all().order_by("key")])
        elif pipeline.is_terminal:
            row["status"] = "not run"
        rows.append(row)
    return rows
