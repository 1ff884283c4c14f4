"""Chaos benchmark: ≥ 100 fault trials against a real deployment; lost / duplicated / stuck must be 0 / 0 / 0.

    python bench/chaos.py [--rounds 13] [--trials kill9,sigterm,...] [--lease 5] [--sweep 1]

One deployment (bench/trials.py `Chaos`: private PostgreSQL cluster and Redis on free ports, the portal on
gunicorn, the portal's Celery worker with beat, two worker agents each behind its own cuttable proxy, all on
production settings with a short lease) takes `--rounds` rounds of every trial, round-robin:
  kill9 (agent SIGKILLed mid-job), sigterm (agent stopped mid-job: hand-back), sigterm_drain (stopped with a
  drain window: the job finishes first), redis_restart,
  postgres_restart, partition (portal unreachable for longer than the lease), disk_full (the agent's scratch
  tmpfs fills mid-job; needs root), duplicate_delivery, visibility_timeout (a job outliving the broker's).
After each trial every job it submitted is checked: *stuck* — not terminal in time; *lost* — terminal but not
succeeded (or its outputs missing); *duplicated* — more than one succeeded attempt, more or other outputs than
the winning attempt's, or stored bytes not matching their checksums; *story* — attempts and events that do not
add up. Prints a table and writes bench/results/chaos.json.
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform`: keep bench/ off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import summary  # noqa: E402
from bench.trials import TRIALS, Chaos, TrialResult, run_trial  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=13,
                        help=f"rounds of every trial (13 × {len(TRIALS)} = {13 * len(TRIALS)} trials)")
    parser.add_argument("--trials", default=",".join(TRIALS), help="comma-separated subset of " + ",".join(TRIALS))
    parser.add_argument("--lease", type=int, default=5, help="lease seconds (production default 30)")
    parser.add_argument("--sweep", type=float, default=1.0, help="sweep period seconds (production default 15)")
    parser.add_argument("--visibility", type=int, default=4, help="agents' broker visibility timeout, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    parser.add_argument("--out", default="bench/results/chaos.json", help="where to write the JSON result")
    args = parser.parse_args()
    names = [n.strip() for n in args.trials.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRIALS]
    if unknown:
        print(f"error: unknown trial {unknown[0]!r} (known: {', '.join(TRIALS)})", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    chaos = Chaos(lease_s=args.lease, sweep_s=args.sweep, redispatch_s=5.0, agents=2, visibility_s=args.visibility)
    print(f"deployment up in {time.monotonic() - t0:.1f} s under {chaos.workdir}", flush=True)
    results: list[TrialResult] = []
    stop = threading.Event()  # SIGINT/SIGTERM: finish the running trial, then tear the deployment down

    def on_signal(signum: int, _frame: object) -> None:
        print(f"{signal.Signals(signum).name}: stopping after this trial", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for r in range(args.rounds):
            if stop.is_set():
                break
            for name in names:
                if stop.is_set():
                    break
                result = run_trial(chaos, name)
                result.name = name
                results.append(result)
                print(f"[{len(results):3}/{args.rounds * len(names)}] round {r + 1} {name:20} "
                      f"{'ok' if result.ok else 'FAILED'} {result.seconds:5.1f} s  load {result.load[1]:.1f}", flush=True)
                if not result.ok:
                    print(result.describe(), flush=True)
    finally:
        chaos.close()
        if not args.keep:
            shutil.rmtree(chaos.workdir, ignore_errors=True)

    rows = {}
    for name in names:
        mine = [r for r in results if r.name == name]
        verdicts = [v for r in mine for v in r.verdicts]
        rows[name] = {
            "trials": len(mine), "jobs": len(verdicts),
            "lost": sum(v.lost for v in verdicts), "duplicated": sum(v.duplicated for v in verdicts),
            "stuck": sum(v.stuck for v in verdicts), "story": sum(bool(v.problems) for v in verdicts),
            "trial_failures": sum(bool(r.problems) for r in mine),
            "seconds": summary([r.seconds for r in mine]),
            "max_load_average": max((max(r.load) for r in mine), default=0.0),
            "failures": [r.describe() for r in mine if not r.ok][:10],
            "problems": sorted({p for r in mine for p in r.problems}
                               | {p for v in verdicts for p in v.problems})[:20],
        }
    total = {k: sum(row[k] for row in rows.values())
             for k in ("trials", "jobs", "lost", "duplicated", "stuck", "story", "trial_failures")}
    print(f"\n{'trial':20} {'trials':>6} {'jobs':>5} {'lost':>5} {'dup':>5} {'stuck':>6} {'story':>6} "
          f"{'failed':>7} {'p50 s':>6} {'max s':>6}")
    for name, row in rows.items():
        print(f"{name:20} {row['trials']:>6} {row['jobs']:>5} {row['lost']:>5} {row['duplicated']:>5} "
              f"{row['stuck']:>6} {row['story']:>6} {row['trial_failures']:>7} {row['seconds']['p50']:>6.1f} "
              f"{row['seconds']['max']:>6.1f}")
    print(f"{'all':20} {total['trials']:>6} {total['jobs']:>5} {total['lost']:>5} {total['duplicated']:>5} "
          f"{total['stuck']:>6} {total['story']:>6} {total['trial_failures']:>7}")
    goal = total["lost"] == total["duplicated"] == total["stuck"] == total["story"] == total["trial_failures"] == 0
    print(f"lost / duplicated / stuck = {total['lost']} / {total['duplicated']} / {total['stuck']} "
          f"(goal 0 / 0 / 0): {'met' if goal else 'NOT met'}; wall {time.monotonic() - t0:.0f} s")
    result = {
        "conditions": {"lease_s": args.lease, "sweep_s": args.sweep, "visibility_timeout_s": args.visibility,
                       "agents": 2, "database": "postgresql (private cluster)", "broker": "redis (private)",
                       "portal": "gunicorn 2×8", "cpu_count": os.cpu_count(), "rounds": args.rounds},
        "trials": rows, "total": total, "goal_met": goal, "wall_s": time.monotonic() - t0,
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0 if goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
