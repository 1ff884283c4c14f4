"""`python -m algorithms.io convert ...` (see algorithms.io.convert)."""

import sys

from algorithms.cli import run_main

COMMANDS = ("convert",)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m algorithms.io {{{','.join(COMMANDS)}}} ... (--help for each)", file=sys.stderr)
        return 2
    from algorithms.io.convert import main

    return main(argv[1:])


raise SystemExit(run_main(_main))
