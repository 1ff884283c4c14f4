"""A quick job for the agent's tests: prints its pid and progress, sleeps `sleep_s`, writes `output` if asked;
with `ignore_sigterm` it survives SIGTERM, so only SIGKILL can stop it (the agent's kill path)."""

import argparse
import json
import os
import signal
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--inputs")
parser.add_argument("--outputs")
parser.add_argument("--params")
args = parser.parse_args()
with open(args.params) as fh:
    params = json.load(fh)


def on_term(signum, frame):
    print("got SIGTERM", file=sys.stderr, flush=True)
    if not params.get("ignore_sigterm"):
        sys.exit(143)


signal.signal(signal.SIGTERM, on_term)
print(json.dumps({"progress": 0.1, "stage": "sleep", "pid": os.getpid()}), flush=True)
deadline = time.monotonic() + float(params.get("sleep_s", 60))
while time.monotonic() < deadline:
    time.sleep(0.05)
if params.get("output"):
    with open(os.path.join(args.outputs, params["output"]), "w") as fh:
        fh.write("result\n")
print(json.dumps({"progress": 1.0, "stage": "done"}), flush=True)
