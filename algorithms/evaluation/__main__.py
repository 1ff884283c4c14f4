import sys

from algorithms.cli import run_main
from algorithms.evaluation.cli import ENTRYPOINTS

entry = ENTRYPOINTS.get(sys.argv[1] if len(sys.argv) > 1 else "")
if entry is None:
    print("usage: python -m algorithms.evaluation compare --truth T --pred P [--outputs DIR]", file=sys.stderr)
    raise SystemExit(2)
raise SystemExit(run_main(lambda argv: entry(sys.argv[2:] if argv is None else argv)))
