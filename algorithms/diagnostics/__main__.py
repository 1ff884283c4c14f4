import sys

from algorithms.cli import run_main
from algorithms.diagnostics import checksum, selftest

ENTRYPOINTS = {"selftest": selftest.main, "checksum": checksum.main}

entry = ENTRYPOINTS.get(sys.argv[1] if len(sys.argv) > 1 else "")
if entry is None:
    print(f"usage: python -m algorithms.diagnostics {{{','.join(ENTRYPOINTS)}}} --outputs DIR ...", file=sys.stderr)
    raise SystemExit(2)
raise SystemExit(run_main(entry))
