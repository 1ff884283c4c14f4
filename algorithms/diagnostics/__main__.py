from algorithms.cli import run_main
from algorithms.diagnostics.selftest import main

raise SystemExit(run_main(main))
