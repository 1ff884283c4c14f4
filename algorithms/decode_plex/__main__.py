import sys

from algorithms.cli import run_main
from algorithms.decode_plex.cli import ENTRYPOINTS

entry = ENTRYPOINTS.get(sys.argv[1] if len(sys.argv) > 1 else "")
if entry is None:
    print(f"usage: python -m algorithms.decode_plex {{{','.join(ENTRYPOINTS)}}} ...", file=sys.stderr)
    raise SystemExit(2)
raise SystemExit(run_main(lambda argv: entry(sys.argv[2:] if argv is None else argv)))
