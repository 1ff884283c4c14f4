"""The main job on the embedded default: a `localize` pipeline from submission to the image on its page.

Runs `manage.py demo --exit-when-done` (SQLite, file-system broker, one CPU worker agent, the bundled model on
the CPU) in a fresh var folder per repeat, with a 64 × 64 px movie of `--frames` frames, then reads the
pipeline and its step jobs from the demo's database: wall time from the pipeline's submission to its end, and
per step the time queued (waiting for its inputs' step, then for a worker) and running (claim to end).

    python bench/main_job.py [--frames 1000] [--repeats 3]

Prints a table and writes bench/results/main_job.json. Timings depend on the machine's load: the JSON keeps
the load average seen at each start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "main_job.json"

READ = r"""
import json
from jobs.models import Job
p = Job.objects.get(pk="{job}")
steps = []
for j in p.steps.order_by("created_at"):
    a = j.attempts.order_by("number").last()
    steps.append({{"step": j.step, "queue": j.queue, "created": j.created_at.timestamp(),
                  "started": a.started_at.timestamp() if a else None,
                  "finished": j.finished_at.timestamp() if j.finished_at else None, "status": j.status}})
print(json.dumps({{"status": p.status, "created": p.created_at.timestamp(), "finished": p.finished_at.timestamp(),
                  "steps": steps}}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(frames: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="locus-main-job-") as var:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "LOCUS_"))}
        env.update(LOCUS_VAR_DIR=var, PYTHONUNBUFFERED="1")
        load = os.getloadavg()
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "manage.py", "demo", "--exit-when-done", "--port", str(free_port()),
                              "--frames", str(frames)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=900)
        demo_s = time.monotonic() - t0
        if out.returncode != 0 or "demo pipeline succeeded" not in out.stdout:
            raise SystemExit(f"the demo failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        job = re.findall(r"/jobs/([0-9a-f-]{36})/", out.stdout.split("demo pipeline succeeded")[1])[0]
        read = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", READ.format(job=job)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
        facts = json.loads(read.stdout.strip().splitlines()[-1])
    start = facts["created"]
    steps = {s["step"]: {"queue": s["queue"], "waited_s": round((s["started"] or start) - s["created"], 2),
                         "ran_s": round(s["finished"] - (s["started"] or s["finished"]), 2),
                         "ended_at_s": round(s["finished"] - start, 2)} for s in facts["steps"]}
    return {"pipeline_s": round(facts["finished"] - start, 2), "demo_command_s": round(demo_s, 2),
            "steps": steps, "load_avg_at_start": [round(v, 2) for v in load]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    runs = [one_run(args.frames) for _ in range(args.repeats)]
    names = list(runs[0]["steps"])
    median = {"pipeline_s": statistics.median(r["pipeline_s"] for r in runs),
              "steps": {n: {k: statistics.median(r["steps"][n][k] for r in runs) for k in ("waited_s", "ran_s")}
                        for n in names}}
    print(f"localize on a 64 x 64 x {args.frames} movie, embedded default, {args.repeats} runs (median)")
    print(f"{'step':8} {'queue':6} {'waited s':>9} {'ran s':>7} {'share of pipeline':>18}")
    for n in names:
        m = median["steps"][n]
        print(f"{n:8} {runs[0]['steps'][n]['queue']:6} {m['waited_s']:9.2f} {m['ran_s']:7.2f} "
              f"{m['ran_s'] / median['pipeline_s']:18.0%}")
    print(f"submission to image: {median['pipeline_s']:.1f} s (demo command, start to exit: "
          f"{statistics.median(r['demo_command_s'] for r in runs):.1f} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"frames": args.frames, "frame_px": 64, "median": median, "runs": runs,
                                   "cpu_count": os.cpu_count(), "command": " ".join(["bench/main_job.py", *sys.argv[1:]])},
                                  indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
